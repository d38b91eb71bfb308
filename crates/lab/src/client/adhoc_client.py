#!/usr/bin/python3
"""TEST-ONLY XMPP client of the server-trust lab: slixmpp (Debian's python3-slixmpp) logged in
over c2s to a lab server, driving XEP-0050 ad-hoc commands one step at a time.

Driven by crates/lab/src/xmpp_client.rs through JSON lines: the first stdin line is the login
(jid, password, address, port, ca_file, timeout); it answers one line, then one line per step.
Steps ("op"):
  items   disco#items of `node` at `to` (the command list: node http://jabber.org/protocol/commands)
  info    disco#info of `node` at `to`
  command <iq type='set'><command node= action= sessionid=/></iq> to `to`, with a submitted
          jabber:x:data form when `fields` ([[var, [values...]], ...]) is given: anything the
          test asks for, stale sessions, changed values and fields the form never offered
          included (no client-side session or form checks, on purpose)
  quit
Every answer is {"ok": true, ...} or {"ok": false, "error": "..."} (a failure of the step itself,
not an XMPP error reply, which is a result with "type": "error").

TLS: STARTTLS is required and the server's certificate is verified against `ca_file`, the lab
server's own self-signed certificate (CN and subjectAltName = its domain), not switched off.
"""

import asyncio
import json
import logging
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

CMD_NS = "http://jabber.org/protocol/commands"
DATA_NS = "jabber:x:data"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def error_fields(stanza):
    err = stanza["error"]
    return {"type": "error", "error": err["condition"], "error_type": err["type"],
            "error_text": err["text"] or None}


def command_summary(iq):
    """The reply to a command as JSON: the same shape whatever the server (see xmpp_client.rs)."""
    out = {"type": iq["type"], "xml": str(iq), "notes": [], "actions": [], "fields": []}
    if iq["type"] == "error":
        out.update(error_fields(iq))
    cmd = iq.xml.find("{%s}command" % CMD_NS)
    if cmd is None:
        return out
    out["status"] = cmd.attrib.get("status")
    out["sessionid"] = cmd.attrib.get("sessionid")
    out["node"] = cmd.attrib.get("node")
    for note in cmd.findall("{%s}note" % CMD_NS):
        out["notes"].append({"type": note.attrib.get("type", "info"), "text": note.text or ""})
    acts = cmd.find("{%s}actions" % CMD_NS)
    if acts is not None:
        out["actions"] = [a.tag.split("}", 1)[-1] for a in acts]
    x = cmd.find("{%s}x" % DATA_NS)
    if x is not None:
        out["form_type"] = x.attrib.get("type")
        title = x.find("{%s}title" % DATA_NS)
        out["title"] = title.text if title is not None else None
        for f in x.findall("{%s}field" % DATA_NS):
            out["fields"].append({
                "var": f.attrib.get("var"),
                "type": f.attrib.get("type"),
                "label": f.attrib.get("label"),
                "required": f.find("{%s}required" % DATA_NS) is not None,
                "values": [v.text or "" for v in f.findall("{%s}value" % DATA_NS)],
                "options": [(o.findtext("{%s}value" % DATA_NS) or "")
                            for o in f.findall("{%s}option" % DATA_NS)],
            })
    return out


class Client(slixmpp.ClientXMPP):
    def __init__(self, login):
        # PLAIN, which slixmpp sends only inside TLS. Not SCRAM: slixmpp 1.8.3 knows only the
        # tls-unique channel binding, which TLS 1.3 lacks, so against Prosody 13 (offering
        # SCRAM-SHA-1-PLUS with tls-exporter) its -PLUS attempt fails and its plain SCRAM then
        # says "y" (client could bind, server cannot), which 13 rightly refuses as a downgrade.
        super().__init__(login["jid"], login["password"], sasl_mech=login.get("mechanism", "PLAIN"))
        self.ca_certs = login["ca_file"]
        self.timeout = float(login.get("timeout", 10))
        for plugin in ("xep_0030", "xep_0004", "xep_0050"):
            self.register_plugin(plugin)
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda _: self._fail("SASL authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail("connection failed: %s" % e))
        self.add_event_handler("disconnected", lambda _: self._fail("disconnected before the session started"))
        # Handled, so slixmpp does not just drop the stream: the reason reaches the test.
        self.add_event_handler("ssl_invalid_chain", lambda e: self._fail("TLS: the server's certificate is not trusted: %s" % e))
        self.add_event_handler("sasl_success", self._on_sasl)
        self.add_event_handler("tls_success", self._on_tls)
        self.mechanism, self.tls = None, False

    def _on_tls(self, _):
        self.tls = True

    def _on_sasl(self, _):
        self.mechanism = self["feature_mechanisms"].use_mech

    def _fail(self, why):
        if not self.started.done():
            self.started.set_exception(RuntimeError(why))

    def _on_start(self, _):
        if not self.started.done():
            self.started.set_result(True)

    async def step(self, s):
        op = s.get("op")
        to = s.get("to") or self.boundjid.host
        if op in ("items", "info"):
            get = self["xep_0030"].get_items if op == "items" else self["xep_0030"].get_info
            try:
                r = await get(jid=to, node=s.get("node"), timeout=self.timeout)
            except IqError as e:
                return dict(error_fields(e.iq), xml=str(e.iq))
            out = {"type": r["type"], "xml": str(r)}
            if op == "items":
                out["items"] = [{"jid": str(j), "node": n, "name": name}
                                for (j, n, name) in r["disco_items"]["items"]]
            else:
                out["identities"] = [list(i) for i in r["disco_info"]["identities"]]
                out["features"] = sorted(r["disco_info"]["features"])
            return out
        if op == "command":
            iq = self.Iq()
            iq["type"] = "set"
            iq["to"] = to
            cmd = iq["command"]
            cmd["node"] = s["node"]
            if s.get("action"):
                cmd["action"] = s["action"]
            if s.get("sessionid"):
                cmd["sessionid"] = s["sessionid"]
            if s.get("fields") is not None:
                form = self["xep_0004"].make_form(ftype="submit")
                for var, values in s["fields"]:
                    field = form.add_field(var=var)
                    field["value"] = values if len(values) != 1 else values[0]
                cmd.append(form)
            try:
                r = await iq.send(timeout=self.timeout)
            except IqError as e:
                r = e.iq
            return command_summary(r)
        return {"ok": False, "error": "unknown op %r" % op}


async def main():
    loop = asyncio.get_event_loop()
    read = lambda: loop.run_in_executor(None, sys.stdin.readline)
    login = json.loads(await read())
    client = Client(login)
    client.connect(address=(login["address"], int(login.get("port", 5222))), force_starttls=True)
    try:
        await asyncio.wait_for(client.started, client.timeout)
    except Exception as e:  # timeout, auth or TLS failure: say so and stop
        emit({"ok": False, "error": "login as %s: %s" % (login["jid"], e or type(e).__name__)})
        client.abort()
        return 1
    emit({"ok": True, "jid": str(client.boundjid), "tls": client.tls, "mechanism": client.mechanism})
    while True:
        line = await read()
        if not line:
            break
        s = json.loads(line)
        if s.get("op") == "quit":
            emit({"ok": True})
            break
        try:
            r = await client.step(s)
            r.setdefault("ok", True)
        except IqTimeout:
            r = {"ok": False, "error": "no answer within %ss" % client.timeout}
        except Exception as e:
            r = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        emit(r)
    client.disconnect()
    try:
        await asyncio.wait_for(client.disconnected, 2)
    except Exception:
        pass
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    # Not "Task was destroyed but it is pending" for slixmpp's filter task at exit.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.exit(asyncio.get_event_loop().run_until_complete(main()))
