/* Buddies-only federation from C through the public header: an engine opened with
 * st_engine_open_federated refuses strangers, lets the XEP-0267 handshake through, and
 * federates with a peer once it is approved; a group narrows it. Built by tests/it/c_abi.rs
 * with -std=c99 -Wall -Wextra -Werror -pedantic.
 * Usage: federation STORE_DIR  (exit 0 on success, prints the failing check otherwise) */
#include <stdio.h>
#include <stdlib.h>

#include "server_trust.h"

static int failures = 0;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                         \
        }                                                                       \
    } while (0)

/* The answer of st_engine_federates_with, or -1 when the call failed. */
static int federates(const st_engine *e, const char *peer, bool host_presence) {
    bool yes = false;
    st_status s = st_engine_federates_with(e, peer, host_presence, &yes);
    if (s != ST_STATUS_OK) {
        fprintf(stderr, "federates_with(%s): %s\n", peer, st_status_str(s));
        return -1;
    }
    return yes ? 1 : 0;
}

static st_engine *open_engine(const char *root, st_federation mode, const char *group) {
    st_engine *e = NULL;
    st_status s = st_engine_open_federated(root, "capulet.lit", NULL, mode, group, &e);
    if (s != ST_STATUS_OK) {
        char buf[256] = "";
        st_last_error(buf, sizeof buf, NULL);
        fprintf(stderr, "open_federated: %s (%s)\n", st_status_str(s), buf);
        exit(1);
    }
    return e;
}

int main(int argc, char **argv) {
    st_engine *e = NULL, *none = NULL;
    st_actions *acts = NULL;
    bool trusted = false;
    if (argc != 2) {
        fprintf(stderr, "usage: federation STORE_DIR\n");
        return 2;
    }

    /* Refused settings leave no handle behind. */
    CHECK(st_engine_open_federated(argv[1], "capulet.lit", NULL, ST_FEDERATION_OPEN, "federate", &none) ==
          ST_STATUS_INVALID_OPTION);
    CHECK(st_engine_open_federated(argv[1], "capulet.lit", NULL, ST_FEDERATION_BUDDIES, "a,b", &none) ==
          ST_STATUS_INVALID_OPTION);
    CHECK(st_engine_open_federated(argv[1], "capulet.lit", NULL, 7, NULL, &none) == ST_STATUS_OUT_OF_RANGE);
    CHECK(st_engine_open_federated(argv[1], "capulet.lit", NULL, ST_FEDERATION_BUDDIES, NULL, NULL) ==
          ST_STATUS_NULL_PARAMETER);
    CHECK(none == NULL);

    /* Buddies only: a stranger is refused, its handshake is not. */
    e = open_engine(argv[1], ST_FEDERATION_BUDDIES, NULL);
    CHECK(federates(e, "montague.lit", false) == 0);
    CHECK(federates(e, "montague.lit", true) == 1);
    CHECK(federates(e, "romeo@montague.lit", true) == 0); /* not a domain: fails closed */
    /* Between the host JIDs: presence and the evidence queries with their replies pass. */
    CHECK(st_host_stanza("presence", "subscribe", NULL));
    CHECK(st_host_stanza("iq", "get", "http://jabber.org/protocol/disco#info"));
    CHECK(st_host_stanza("iq", "result", NULL));
    CHECK(!st_host_stanza("iq", "set", "http://jabber.org/protocol/disco#info"));
    CHECK(!st_host_stanza("message", "chat", NULL));
    CHECK(!st_host_stanza(NULL, NULL, NULL));
    CHECK(st_engine_federates_with(e, NULL, false, &trusted) == ST_STATUS_NULL_PARAMETER);
    CHECK(st_engine_federates_with(NULL, "montague.lit", false, &trusted) == ST_STATUS_NULL_PARAMETER);
    CHECK(st_engine_federates_with(e, "montague.lit", false, NULL) == ST_STATUS_NULL_PARAMETER);

    /* The stranger asks; still refused until the admin approves. */
    CHECK(st_engine_inbound(e, "montague.lit", ST_PRESENCE_TYPE_SUBSCRIBE, NULL, &acts) == ST_STATUS_OK);
    st_actions_free(acts);
    acts = NULL;
    CHECK(federates(e, "montague.lit", false) == 0);
    CHECK(st_engine_approve(e, "montague.lit", &acts) == ST_STATUS_OK);
    st_actions_free(acts);
    acts = NULL;
    CHECK(st_is_trusted(e, "montague.lit", NULL, &trusted) == ST_STATUS_OK && trusted);
    CHECK(federates(e, "montague.lit", false) == 1);
    CHECK(federates(e, "MONTAGUE.lit", false) == 1); /* any spelling the router hands over */
    CHECK(federates(e, "verona.lit", false) == 0);
    st_engine_free(e);

    /* With a group, an approved peer outside it is refused; the handshake still passes. */
    e = open_engine(argv[1], ST_FEDERATION_BUDDIES, "federate");
    CHECK(federates(e, "montague.lit", false) == 0);
    CHECK(federates(e, "montague.lit", true) == 1);
    st_engine_free(e);

    /* Open: everyone, as XMPP does by default. */
    e = open_engine(argv[1], ST_FEDERATION_OPEN, NULL);
    CHECK(federates(e, "verona.lit", false) == 1);
    st_engine_free(e);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("C federation OK\n");
    return 0;
}
