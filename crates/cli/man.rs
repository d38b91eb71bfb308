//! server-trust(1): clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION and OPTIONS from the
//! clap definition, then sections clap cannot know. The commands are listed on this page
//! (clap_mangen would point at one page per subcommand, which nobody installs).
//! `crates/cli/tests/man.rs` runs every command under EXAMPLES against a real store.

use std::io::{self, Write};

/// The whole page.
pub fn render(cmd: &clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).manual("server-trust manual");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    commands(cmd, w)?;
    for (title, body) in SECTIONS {
        writeln!(w, ".SH \"{title}\"")?;
        w.write_all(body.as_bytes())?;
    }
    writeln!(w, ".SH EXAMPLES")?;
    for (what, command) in EXAMPLES {
        if !what.is_empty() {
            writeln!(w, ".PP\n{}", escape(what))?;
        }
        writeln!(w, ".PP\n.RS 4\n.EX\n{}\n.EE\n.RE", escape(command))?;
    }
    writeln!(w, ".SH \"SEE ALSO\"\n.BR server\\-trust\\-sidecar (8)")?;
    writeln!(
        w,
        ".PP\n/usr/share/doc/server\\-trust/README.md: set-up for Prosody and ejabberd, the store's \
         files, the security model."
    )?;
    man.render_version_section(w)
}

/// Every EXAMPLES entry: what it does (empty: more of the one before), and the command as an
/// admin types it. The test runs
/// each with the store path replaced by a scratch store and without `sudo`.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "See what waits for a decision on Debian's Prosody (as root: the command acts as the store's owner):",
        "sudo server-trust --store /var/lib/prosody/server_trust --host capulet.lit pending",
    ),
    (
        "Approve one request; the running server sends subscribed and its own subscribe:",
        "sudo server-trust --store /var/lib/prosody/server_trust --host capulet.lit approve montague.lit",
    ),
    (
        "Approve one for 90 days only: the server reminds its admins 7 days before the end (list \
         shows it), then withdraws trust as revoke does, unless renewed:",
        "sudo server-trust --store /var/lib/prosody/server_trust --host capulet.lit approve paris.lit --for 90d",
    ),
    (
        "",
        "sudo server-trust --store /var/lib/prosody/server_trust --host capulet.lit renew paris.lit --for 90d",
    ),
    (
        "Deny every pending request from one site and its subdomains, after a flood:",
        "sudo server-trust --store /var/lib/prosody/server_trust --host capulet.lit deny --site github.io",
    ),
    (
        "Ask a server to become a buddy, then read what happened to it:",
        "sudo server-trust --store /var/lib/prosody/server_trust --host capulet.lit request verona.lit",
    ),
    ("", "sudo server-trust --store /var/lib/prosody/server_trust --host capulet.lit log --peer verona.lit"),
    (
        "The roster for a script, from the sidecar's store (ejabberd):",
        "sudo server-trust --store /var/lib/ejabberd/server_trust --host capulet.lit --json list",
    ),
];

/// Sections written by hand, as roff.
const SECTIONS: &[(&str, &str)] = &[
    (
        "EXIT STATUS",
        r#".TP
.B 0
Success: the view was printed or the act recorded (the server carries it out at its next look
at the store, within moments).
.TP
.B 2
Error, with one line on standard error: bad arguments, a name that is not a server's domain
(a user or full JID, a single label), no such request or peer, a decision that disagrees with
one recorded first (the message names it, who made it and when), a store that cannot be read
or written, or its lock held longer than 10 s.
"#,
    ),
    (
        "ENVIRONMENT",
        r#".TP
.B SERVER_TRUST_STORE
The store, when \-\-store is not given. It may name one host's folder.
.TP
.B SERVER_TRUST_HOST
The served host, when \-\-host is not given; needed only when the store serves more than one.
"#,
    ),
    (
        "FILES",
        r#"One folder per served host under the store; every file is plain text, replaced atomically.
.TP
.I /var/lib/prosody/server_trust/
The store of Debian's Prosody (mod_server_trust's default,
.IR data_path /server_trust).
.TP
.I /var/lib/ejabberd/server_trust/
The store of the packaged sidecar for ejabberd.
.TP
.IR HOST /roster.toml
The server roster: state, groups, note, approved at and by, and for trust given for a time its
end (expires_at) and when the admins were reminded of it. Admins may edit groups and note.
.TP
.IR HOST /roster.journal
Changes since roster.toml was last written whole, one JSON line each.
.TP
.IR HOST /pending/ PEER .toml
One inbound request each. Set decision = "approve" or "deny" and save to decide by editing
(with trust_for = "90d" beside an approval, for that long only);
delete it to dismiss the request without an answer.
.TP
.IR HOST /outbound/
Requests and revocations queued by this command for the server, in order.
.TP
.IR HOST /audit.log
Every transition, with time and actor, one JSON line each.
.TP
.IR HOST /drops.toml
Requests dropped at the pending caps, and since when (delete it to reset the count).
.TP
.IR HOST /presence.toml
Peers' availability as the server last heard it, and since when (list shows it).
"#,
    ),
    (
        "STATES",
        r#"Subscription states of RFC 6121, seen from this server: who receives whose presence.
.TP
.B none
No subscription either way.
.TP
.B none+pending-out
We asked the peer (request); its answer is awaited.
.TP
.B none+pending-in
The peer asked us; an admin's decision is awaited.
.TP
.B none+pending-out-in
Both asked, neither answered yet.
.TP
.B to
The peer approved us; we did not approve it.
.TP
.B to+pending-in
The peer approved us and asks for our approval.
.TP
.B from
We approved the peer (it is trusted); it has not approved us.
.TP
.B from+pending-out
We approved the peer and await its answer to our own request.
.TP
.B both
Buddies: each approved the other.
.PP
A peer is trusted (a buddy, in the server roster for access control) when we approved it:
from, from+pending-out and both.
"#,
    ),
];

/// The COMMANDS section: each subcommand with its arguments and options.
fn commands(cmd: &clap::Command, w: &mut dyn Write) -> io::Result<()> {
    writeln!(w, ".SH COMMANDS")?;
    let mut cmd = cmd.clone();
    cmd.build(); // fills in what arguments take (value names, counts)
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut usage = format!("\\fB{}\\fR", escape(sub.get_name()));
        for arg in sub.get_arguments().filter(|a| shown(a)) {
            let value = arg.get_value_names().and_then(|v| v.first()).map(|v| v.to_string());
            let value = value.unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            usage.push(' ');
            usage.push_str(&match arg.get_long() {
                Some(long) if arg.get_num_args().is_some_and(|n| n.takes_values()) => {
                    format!("[\\fB\\-\\-{}\\fR \\fI{}\\fR]", escape(long), escape(&value))
                }
                Some(long) => format!("[\\fB\\-\\-{}\\fR]", escape(long)),
                None => format!("\\fI{}\\fR", escape(&value)),
            });
        }
        writeln!(w, ".TP\n{usage}")?;
        if let Some(about) = sub.get_about() {
            writeln!(w, "{}", escape(&about.to_string()))?;
        }
        for arg in sub.get_arguments().filter(|a| shown(a) && a.get_long().is_some()) {
            if let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) {
                writeln!(w, ".RS\n.TP\n\\fB\\-\\-{}\\fR\n{}\n.RE", escape(long), escape(&help.to_string()))?;
            }
        }
    }
    Ok(())
}

/// A subcommand's own arguments: not the global ones nor clap's `--help`.
fn shown(arg: &clap::Arg) -> bool {
    !arg.is_hide_set() && !arg.is_global_set() && arg.get_id() != "help"
}

/// Text for roff: backslashes and hyphens escaped, no line starting with a control character.
fn escape(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') { format!("\\&{s}") } else { s }
}
