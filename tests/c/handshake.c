/* The whole XEP-0267 handshake between two engines, driven from C through the public header.
 * Built by tests/it/c_abi.rs with -std=c99 -Wall -Wextra -Werror -pedantic.
 * Usage: handshake STORE_DIR  (exit 0 on success, prints the failing check otherwise) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_trust.h"

static int failures = 0;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                         \
        }                                                                       \
    } while (0)

static void print_status(const char *what, st_status s) {
    char buf[256] = "";
    st_last_error(buf, sizeof buf, NULL);
    fprintf(stderr, "%s: %s (%s)\n", what, st_status_str(s), buf);
}

/* Everything one engine answered to a delivery. */
typedef struct {
    st_actions *lists[16];
    size_t n;
} batch;

static void batch_free(batch *b) {
    size_t i;
    for (i = 0; i < b->n; i++) {
        st_actions_free(b->lists[i]);
    }
    b->n = 0;
}

/* Delivers every SEND action of `acts` addressed to `to_host` into `to`. */
static batch deliver(const char *from_host, const st_actions *acts, st_engine *to, const char *to_host) {
    batch out;
    size_t i;
    out.n = 0;
    for (i = 0; i < st_actions_len(acts); i++) {
        st_action a;
        st_actions *got = NULL;
        st_status s;
        CHECK(st_actions_get(acts, i, &a) == ST_STATUS_OK);
        if (a.kind != ST_ACTION_SEND || strcmp(a.peer, to_host) != 0) {
            continue;
        }
        s = st_engine_inbound(to, from_host, a.type, a.id, &got);
        if (s != ST_STATUS_OK) {
            print_status("inbound", s);
            failures++;
        } else if (out.n < sizeof out.lists / sizeof out.lists[0]) {
            out.lists[out.n++] = got;
        } else {
            st_actions_free(got);
        }
    }
    return out;
}

static int count_sends(const st_actions *acts, const char *type) {
    size_t i;
    int n = 0;
    for (i = 0; i < st_actions_len(acts); i++) {
        st_action a;
        if (st_actions_get(acts, i, &a) == ST_STATUS_OK && a.kind == ST_ACTION_SEND &&
            strcmp(st_presence_type_name(a.type), type) == 0) {
            n++;
        }
    }
    return n;
}

static int batch_sends(const batch *b, const char *type) {
    size_t i;
    int n = 0;
    for (i = 0; i < b->n; i++) {
        n += count_sends(b->lists[i], type);
    }
    return n;
}

/* Delivers a whole batch (all its lists) and returns the answers. */
static batch deliver_batch(const char *from_host, const batch *b, st_engine *to, const char *to_host) {
    batch out;
    size_t i, j;
    out.n = 0;
    for (i = 0; i < b->n; i++) {
        batch part = deliver(from_host, b->lists[i], to, to_host);
        for (j = 0; j < part.n; j++) {
            if (out.n < sizeof out.lists / sizeof out.lists[0]) {
                out.lists[out.n++] = part.lists[j];
            } else {
                st_actions_free(part.lists[j]);
            }
        }
    }
    return out;
}

static int trusted(const st_engine *e, const char *peer) {
    bool t = false, t_n = !t;
    CHECK(st_is_trusted(e, peer, NULL, &t) == ST_STATUS_OK);
    /* The counted variant must agree, on a copy with no NUL where the name ends. */
    char copy[256];
    size_t n = strlen(peer);
    CHECK(n < sizeof copy);
    memcpy(copy, peer, n);
    memset(copy + n, 'x', sizeof copy - n);
    CHECK(st_is_trusted_n(e, copy, n, &t_n) == ST_STATUS_OK);
    CHECK(t == t_n);
    return t ? 1 : 0;
}

static st_subscription state(const st_engine *e, const char *peer) {
    st_subscription s = 99;
    CHECK(st_engine_state(e, peer, &s) == ST_STATUS_OK);
    return s;
}

int main(int argc, char **argv) {
    char mroot[4096], croot[4096];
    st_engine *m = NULL, *c = NULL;
    st_actions *a1 = NULL, *c2 = NULL, *bad = NULL;
    batch c1, m2, c3, c2b;
    st_options opts = st_options_default();
    st_subscription next = 0;
    st_disposition disp = 0;
    st_status s;

    if (argc != 2) {
        fprintf(stderr, "usage: %s STORE_DIR\n", argv[0]);
        return 2;
    }
    snprintf(mroot, sizeof mroot, "%s/m", argv[1]);
    snprintf(croot, sizeof croot, "%s/c", argv[1]);
    opts.watch = false;

    /* The pure transition function, for hosts with their own storage. */
    CHECK(st_transition(ST_SUBSCRIPTION_NONE, ST_DIRECTION_INBOUND, ST_PRESENCE_TYPE_SUBSCRIBE, &next, &disp) == ST_STATUS_OK);
    CHECK(next == ST_SUBSCRIPTION_NONE_PENDING_IN && disp == ST_DISPOSITION_DELIVER);
    CHECK(st_transition(ST_SUBSCRIPTION_BOTH, ST_DIRECTION_INBOUND, ST_PRESENCE_TYPE_SUBSCRIBE, &next, &disp) == ST_STATUS_OK);
    CHECK(next == ST_SUBSCRIPTION_BOTH && disp == ST_DISPOSITION_AUTO_REPLY);
    CHECK(st_transition(9, 0, 0, &next, &disp) == ST_STATUS_OUT_OF_RANGE);
    CHECK(st_transition(0, 7, 0, &next, &disp) == ST_STATUS_OUT_OF_RANGE);

    s = st_engine_open(mroot, "montague.lit", &opts, &m);
    if (s != ST_STATUS_OK) { print_status("open montague", s); return 1; }
    s = st_engine_open(croot, "capulet.lit", &opts, &c);
    if (s != ST_STATUS_OK) { print_status("open capulet", s); return 1; }

    /* Bad input is a status, never a crash. */
    CHECK(st_engine_inbound(c, "alice@montague.lit", ST_PRESENCE_TYPE_SUBSCRIBE, NULL, &bad) == ST_STATUS_INVALID_DOMAIN);
    CHECK(st_engine_inbound(c, "montague.lit/res", ST_PRESENCE_TYPE_SUBSCRIBE, NULL, &bad) == ST_STATUS_INVALID_DOMAIN);
    CHECK(st_engine_inbound(c, NULL, ST_PRESENCE_TYPE_SUBSCRIBE, NULL, &bad) == ST_STATUS_NULL_PARAMETER);
    CHECK(st_engine_approve(c, "montague.lit", &bad) == ST_STATUS_NO_PENDING_REQUEST);
    CHECK(bad == NULL);

    /* montague's admin asks. */
    CHECK(st_engine_request(m, "capulet.lit", &a1) == ST_STATUS_OK);
    CHECK(count_sends(a1, "subscribe") == 1);
    CHECK(state(m, "capulet.lit") == ST_SUBSCRIPTION_NONE_PENDING_OUT);

    /* capulet holds it for its admin: nothing goes back. The host tells how the stream
       was authenticated first (evidence for the admin). */
    CHECK(st_engine_session(c, "montague.lit", "trust-me", NULL, 0) == ST_STATUS_UNKNOWN_NAME);
    CHECK(st_engine_session(c, "montague.lit", "dialback", NULL, 0) == ST_STATUS_OK);
    c1 = deliver("montague.lit", a1, c, "capulet.lit");
    CHECK(c1.n == 1 && batch_sends(&c1, "subscribed") == 0);
    CHECK(state(c, "montague.lit") == ST_SUBSCRIPTION_NONE_PENDING_IN);
    CHECK(!trusted(c, "montague.lit"));

    /* ... and asks montague two questions; the host sends them and hands back the replies
       (here disco#info answers, version times out): the last one brings a notice. */
    {
        size_t i, queries = 0, notices = 0;
        for (i = 0; i < st_actions_len(c1.lists[0]); i++) {
            st_action a;
            st_actions *got = NULL;
            const char *reply = NULL;
            size_t j;
            CHECK(st_actions_get(c1.lists[0], i, &a) == ST_STATUS_OK);
            if (a.kind != ST_ACTION_QUERY) continue;
            queries++;
            CHECK(strcmp(a.peer, "montague.lit") == 0);
            if (strcmp(a.text, "http://jabber.org/protocol/disco#info") == 0) {
                reply = "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info'>"
                        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>"
                        "<value>http://jabber.org/network/serverinfo</value></field>"
                        "<field var='abuse-addresses'><value>mailto:abuse@montague.lit</value></field>"
                        "</x></query></iq>";
            } else {
                CHECK(strcmp(a.text, "jabber:iq:version") == 0);
            }
            CHECK(st_engine_answer(c, a.peer, a.text, reply, &got) == ST_STATUS_OK);
            for (j = 0; j < st_actions_len(got); j++) {
                st_action n;
                CHECK(st_actions_get(got, j, &n) == ST_STATUS_OK);
                if (n.kind == ST_ACTION_NOTIFY) {
                    notices++;
                    CHECK(strstr(n.text, "abuse mailto:abuse@montague.lit") != NULL);
                    CHECK(strstr(n.text, "dialback only") != NULL);
                }
            }
            st_actions_free(got);
        }
        CHECK(queries == 2 && notices == 1);
        CHECK(ST_ANSWER_TIMEOUT_SECS == 10);
    }

    /* capulet's admin approves: subscribed + reciprocal subscribe. */
    CHECK(st_engine_approve(c, "montague.lit", &c2) == ST_STATUS_OK);
    CHECK(count_sends(c2, "subscribed") == 1 && count_sends(c2, "subscribe") == 1);
    CHECK(trusted(c, "montague.lit"));

    /* montague: pre-approved by its own request, answers without a second prompt. */
    c2b.n = 1;
    c2b.lists[0] = c2;
    m2 = deliver_batch("capulet.lit", &c2b, m, "montague.lit");
    CHECK(batch_sends(&m2, "subscribed") == 1 && batch_sends(&m2, "subscribe") == 0);
    CHECK(state(m, "capulet.lit") == ST_SUBSCRIPTION_BOTH);
    c3 = deliver_batch("montague.lit", &m2, c, "capulet.lit");
    CHECK(batch_sends(&c3, "subscribed") == 0);
    CHECK(state(c, "montague.lit") == ST_SUBSCRIPTION_BOTH);
    CHECK(trusted(m, "capulet.lit") && trusted(c, "montague.lit"));

    printf("montague sees capulet.lit: state %u trusted %d\n", (unsigned)state(m, "capulet.lit"), trusted(m, "capulet.lit"));
    printf("capulet sees montague.lit: state %u trusted %d\n", (unsigned)state(c, "montague.lit"), trusted(c, "montague.lit"));

    st_actions_free(a1);
    batch_free(&c1);
    batch_free(&c2b); /* owns c2 */
    batch_free(&m2);
    batch_free(&c3);
    st_engine_free(m);
    st_engine_free(c);
    st_engine_free(NULL);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("C handshake OK (server-trust %s)\n", st_version());
    return 0;
}
