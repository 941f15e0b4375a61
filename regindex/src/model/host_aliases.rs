//! Equivalent registry host names.
//!
//! One registry is reached under several names (`registry:5000` inside the cluster,
//! `10.0.0.5:5000` from a node, `registry.example.com` from the internet), and each event
//! carries the host the client used (`request.host`). Recording the host as reported
//! would count one image twice, so every alias maps to one canonical host.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("empty host name under {0:?}")]
    EmptyHost(String),
    #[error("{alias:?} is listed under both {first:?} and {second:?}")]
    Ambiguous {
        alias: String,
        first: String,
        second: String,
    },
}

/// Maps any host name an event may carry to the canonical host it is recorded under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasMap {
    /// Lowercased alias (and canonical host) → canonical host.
    canonical: BTreeMap<String, String>,
    default_host: String,
    merge_unlisted: bool,
}

/// Host names compare case-insensitively and a fully qualified name's trailing dot
/// (`example.com.:5000`) does not make it a different host.
fn fold(host: &str) -> String {
    // A host header is short; NULs are not storable (see `event::clean`).
    let host: String = host.chars().filter(|&c| c != '\0').take(255).collect();
    let host = host.trim().to_ascii_lowercase();
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{}:{port}", name.trim_end_matches('.'))
        }
        _ => host.trim_end_matches('.').to_owned(),
    }
}

impl AliasMap {
    pub fn new(
        aliases: &BTreeMap<String, Vec<String>>,
        default_host: &str,
        merge_unlisted: bool,
    ) -> Result<Self, AliasError> {
        let mut canonical: BTreeMap<String, String> = BTreeMap::new();
        for (host, names) in aliases {
            let host_folded = fold(host);
            if host_folded.is_empty() {
                return Err(AliasError::EmptyHost(host.clone()));
            }
            for name in std::iter::once(host).chain(names) {
                let folded = fold(name);
                if folded.is_empty() {
                    return Err(AliasError::EmptyHost(host.clone()));
                }
                match canonical.get(&folded) {
                    Some(existing) if *existing != host_folded => {
                        return Err(AliasError::Ambiguous {
                            alias: name.clone(),
                            first: existing.clone(),
                            second: host_folded,
                        })
                    }
                    _ => {
                        canonical.insert(folded, host_folded.clone());
                    }
                }
            }
        }
        // The default host may itself be an alias.
        let default_host = fold(default_host);
        let default_host = canonical
            .get(&default_host)
            .cloned()
            .unwrap_or(default_host);
        Ok(Self {
            canonical,
            default_host,
            merge_unlisted,
        })
    }

    /// The canonical host for the host an event reported (`None`: it reported none).
    pub fn canonical(&self, host: Option<&str>) -> String {
        let folded = host.map(fold).unwrap_or_default();
        if folded.is_empty() {
            return self.default_host.clone();
        }
        match self.canonical.get(&folded) {
            Some(canonical) => canonical.clone(),
            None if self.merge_unlisted && !self.default_host.is_empty() => {
                self.default_host.clone()
            }
            None => folded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(default_host: &str, merge: bool) -> AliasMap {
        let aliases: BTreeMap<String, Vec<String>> = [(
            "registry.example.com".to_owned(),
            vec!["registry:5000".to_owned(), "10.0.0.5:5000".to_owned()],
        )]
        .into_iter()
        .collect();
        AliasMap::new(&aliases, default_host, merge).unwrap()
    }

    #[test]
    fn aliases_map_to_their_canonical_host() {
        let m = map("", false);
        for host in [
            "registry.example.com",
            "Registry.Example.COM",
            "registry.example.com.",
            "registry:5000",
            "10.0.0.5:5000",
            " 10.0.0.5:5000 ",
        ] {
            assert_eq!(m.canonical(Some(host)), "registry.example.com", "{host}");
        }
    }

    #[test]
    fn unlisted_hosts_are_kept_unless_merged() {
        assert_eq!(map("", false).canonical(Some("Other:443")), "other:443");
        assert_eq!(
            map("registry.example.com", true).canonical(Some("other")),
            "registry.example.com"
        );
        // Merging needs somewhere to merge to.
        assert_eq!(map("", true).canonical(Some("other")), "other");
    }

    #[test]
    fn missing_host_is_the_default_host() {
        assert_eq!(
            map("registry:5000", false).canonical(None),
            "registry.example.com"
        );
        assert_eq!(map("other", false).canonical(None), "other");
        assert_eq!(map("", false).canonical(Some("")), "");
    }

    #[test]
    fn an_alias_under_two_hosts_is_refused() {
        let aliases: BTreeMap<String, Vec<String>> = [
            ("a".to_owned(), vec!["x:1".to_owned()]),
            ("b".to_owned(), vec!["X:1".to_owned()]),
        ]
        .into_iter()
        .collect();
        assert!(matches!(
            AliasMap::new(&aliases, "", false),
            Err(AliasError::Ambiguous { .. })
        ));
        let empty: BTreeMap<String, Vec<String>> = [("a".to_owned(), vec![" ".to_owned()])]
            .into_iter()
            .collect();
        assert!(matches!(
            AliasMap::new(&empty, "", false),
            Err(AliasError::EmptyHost(_))
        ));
    }

    #[test]
    fn a_trailing_dot_before_the_port_and_nul_characters_do_not_make_another_host() {
        let m = map("", false);
        assert_eq!(m.canonical(Some("registry.:5000")), "registry.example.com");
        assert_eq!(m.canonical(Some("registry\0:5000")), "registry.example.com");
        assert_eq!(m.canonical(Some("Other.:80")), "other:80");
        // A colon without a port is part of the name.
        assert_eq!(m.canonical(Some("a:b.")), "a:b");
    }

    #[test]
    fn the_default_host_may_be_an_alias_and_a_host_may_list_itself() {
        let aliases: BTreeMap<String, Vec<String>> =
            [("a".to_owned(), vec!["A".to_owned(), "b".to_owned()])]
                .into_iter()
                .collect();
        let m = AliasMap::new(&aliases, "B.", false).unwrap();
        assert_eq!(m.canonical(None), "a");
        assert!(matches!(
            AliasMap::new(&[(" ".to_owned(), vec![])].into_iter().collect(), "", false),
            Err(AliasError::EmptyHost(_))
        ));
    }
}
