//! Lua literals for generated configs and `prosodyctl shell` lines.

use std::path::Path;

/// A double-quoted Lua string literal for any text.
pub fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Lua string literal for a path (lab paths are UTF-8: they come from temp dirs and the repo).
pub fn lua_path(p: &Path) -> String {
    lua_str(p.to_str().expect("lab paths must be UTF-8"))
}

/// A Lua long-bracket string `[==[...]==]` that `s` cannot terminate early (for stanza XML,
/// which is full of quotes).
pub fn lua_long_str(s: &str) -> String {
    let mut level = 0;
    loop {
        let eq = "=".repeat(level);
        if !s.contains(&format!("]{eq}]")) && !s.ends_with(&format!("]{eq}")) {
            return format!("[{eq}[{s}]{eq}]");
        }
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_escape_what_lua_would_misread() {
        assert_eq!(lua_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(lua_str("x\ny\r\0"), r#""x\ny\r\0""#);
        assert_eq!(lua_long_str("<a x='1'/>"), "[[<a x='1'/>]]");
        assert_eq!(lua_long_str("a]]b"), "[=[a]]b]=]");
        assert_eq!(lua_long_str("a]"), "[=[a]]=]");
    }
}
