//! Reading leasecron's text log: logfmt lines (`ts=… level=… target=… msg=… key=value …`).

/// One log line's `key=value` pairs, in order, with quoted values unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line(pub Vec<(String, String)>);

impl Line {
    /// The value of `key`, if the line has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The message (`msg`).
    pub fn msg(&self) -> &str {
        self.get("msg").unwrap_or_default()
    }

    /// The keys, in order.
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Parses one logfmt line; `Err` names what is malformed (a key without `=`, an unterminated quote, a
/// bad escape, a quote inside a bare value).
pub fn parse(line: &str) -> Result<Line, String> {
    let mut pairs = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(Line(pairs));
        }
        let mut key = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                Some(c) if c == ' ' || c == '"' => return Err(format!("bad key {key:?}{c}")),
                Some(c) => key.push(c),
                None => return Err(format!("key {key:?} without a value")),
            }
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        Some('t') => value.push('\t'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('u') => {
                            let hex: String = chars.by_ref().take(4).collect();
                            let c = u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| format!("bad escape \\u{hex}"))?;
                            value.push(c);
                        }
                        other => return Err(format!("bad escape \\{other:?} in {key}")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quote in {key}")),
                }
            }
            if chars.peek().is_some_and(|&c| c != ' ') {
                return Err(format!("text after the quoted value of {key}"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                if c == '"' || c == '=' || c.is_control() {
                    return Err(format!("{c:?} in the bare value of {key}"));
                }
                value.push(c);
                chars.next();
            }
            if value.is_empty() {
                return Err(format!("empty bare value of {key}"));
            }
        }
        pairs.push((key, value));
    }
}

/// Every line of `log`, parsed; panics naming the first line that is not leasecron's logfmt (it must start
/// with `ts` (RFC 3339, UTC), `level`, `target`, `msg`).
pub fn lines(log: &str) -> Vec<Line> {
    log.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let line = parse(l).unwrap_or_else(|e| panic!("not logfmt ({e}): {l}"));
            assert_eq!(
                line.keys().get(..4),
                Some(&["ts", "level", "target", "msg"][..]),
                "{l}"
            );
            let ts = line.get("ts").unwrap_or_default();
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
                "ts is RFC 3339 UTC: {l}"
            );
            line
        })
        .collect()
}
