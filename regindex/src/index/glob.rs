//! `*` / `?` wildcard patterns of the `:matches` query extension.
//!
//! `*` matches any run of characters (also none), `?` exactly one character; every other
//! character matches itself. There is no escape: tags cannot contain `*` or `?`, and
//! label values that do are matched by `*`/`?` themselves.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the whole of `text` matches (not a substring search).
    ///
    /// Greedy matching with one backtrack point (the last `*`): linear in practice and
    /// O(len(text) * len(pattern)) at worst, so hostile patterns cannot blow up.
    pub fn matches(&self, text: &str) -> bool {
        let pattern: Vec<char> = self.0.chars().collect();
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some('?') => {
                    p += 1;
                    t += 1;
                }
                Some(c) if *c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    // Let the last `*` swallow one more character and retry.
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|c| *c == '*')
    }

    /// The equivalent SQL `LIKE` pattern (default escape character `\`): LIKE's own
    /// metacharacters `%`, `_` and `\` are escaped so that they match literally.
    pub fn to_like(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 4);
        for c in self.0.chars() {
            match c {
                '*' => out.push('%'),
                '?' => out.push('_'),
                '%' | '_' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let cases = [
            ("latest", "latest", true),
            ("latest", "latest2", false),
            ("latest-*", "latest-1", true),
            ("latest-*", "latest-", true),
            ("latest-*", "latest", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("?", "", false),
            ("?", "é", true),
            ("f??", "f38", true),
            ("f??", "f380", false),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("a*b*c", "abbbc", true),
            ("a*b*c", "abcbcx", false),
            (
                "app/*/x86_64/*",
                "app/org.gnome.Calculator/x86_64/stable",
                true,
            ),
            (
                "app/*/x86_64/*",
                "runtime/org.gnome.Platform/aarch64/45",
                false,
            ),
            ("50%", "50%", true),
            ("50%", "50x", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn hostile_pattern_is_fast() {
        let text = "a".repeat(5000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!Glob::new(&pattern).matches(&text));
    }

    #[test]
    fn like_escaping() {
        assert_eq!(Glob::new("latest-*").to_like(), "latest-%");
        assert_eq!(Glob::new("f??").to_like(), "f__");
        assert_eq!(Glob::new("a_b%c\\d*").to_like(), "a\\_b\\%c\\\\d%");
    }
}
