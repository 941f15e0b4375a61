//! How dead letters are shown (pure).

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regindex::bus::dead_letters::DeadLetter;
use regindex::store::StoredProblem;

/// A table, one dead letter a line.
pub fn table(letters: &[DeadLetter], now: DateTime<Utc>) -> String {
    if letters.is_empty() {
        return "no dead letters\n".into();
    }
    let rows: Vec<[String; 5]> = letters
        .iter()
        .map(|l| {
            [
                l.id.clone(),
                l.routing_key.clone(),
                l.attempts.to_string(),
                l.age(now).map(age).unwrap_or_else(|| "-".into()),
                l.reason.replace('\n', " "),
            ]
        })
        .collect();
    let header = ["ID", "ROUTING KEY", "ATTEMPTS", "AGE", "REASON"].map(String::from);
    let mut widths = [0; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter().zip(row) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", row[4]);
    }
    out
}

/// Tag problems, one a line: repository, tag, digest, since, whether the tag is indexed
/// in part, reason.
pub fn problems(problems: &[StoredProblem], now: DateTime<Utc>) -> String {
    if problems.is_empty() {
        return "no problems\n".into();
    }
    let rows: Vec<[String; 6]> = problems
        .iter()
        .map(|p| {
            let since = (now - p.first_seen)
                .to_std()
                .map(age)
                .unwrap_or_else(|_| "-".into());
            [
                p.repository.to_string(),
                p.problem.tag.to_string(),
                p.problem.digest.to_string(),
                since,
                if p.problem.partial { "partly" } else { "no" }.to_owned(),
                p.problem.reason.replace('\n', " "),
            ]
        })
        .collect();
    let header = ["REPOSITORY", "TAG", "DIGEST", "SINCE", "INDEXED", "REASON"].map(String::from);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter().zip(row) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", row[5]);
    }
    out
}

/// Every header and the body (pretty-printed when it is JSON).
pub fn detail(letter: &DeadLetter) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id:          {}", letter.id);
    let _ = writeln!(out, "exchange:    {}", letter.exchange);
    let _ = writeln!(out, "routing key: {}", letter.routing_key);
    let _ = writeln!(out, "headers:");
    for (name, value) in &letter.headers {
        let _ = writeln!(out, "  {name}: {value}");
    }
    let body = serde_json::from_slice::<serde_json::Value>(letter.body())
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(letter.body()).into_owned());
    let _ = writeln!(out, "body:\n{body}");
    out
}

/// `45s`, `12m 3s`, `5h 2m`, `3d 4h`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;
    use lapin::BasicProperties;
    use regindex::bus::headers;
    use regindex::bus::republish::Received;

    fn letter() -> DeadLetter {
        let mut table = FieldTable::default();
        headers::set_str(
            &mut table,
            headers::ORIGINAL_ROUTING_KEY,
            "registry.push.manifest",
        );
        headers::set_str(
            &mut table,
            headers::REASON,
            "gave up after 8 attempts: registry answered 503",
        );
        headers::set_u32(&mut table, headers::ATTEMPTS, 8);
        headers::set_str(&mut table, headers::FAILED_AT, "2026-11-25T10:00:00+00:00");
        DeadLetter::from_received(Received {
            exchange: String::new(),
            routing_key: "regindex.dead".into(),
            properties: BasicProperties::default()
                .with_message_id("abc".into())
                .with_headers(table),
            body: br#"{"repository":"apps/calc"}"#.to_vec(),
        })
    }

    #[test]
    fn table_lines_up() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:05:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            table(&[letter()], now),
            "ID   ROUTING KEY             ATTEMPTS  AGE    REASON\n\
             abc  registry.push.manifest  8         2h 5m  gave up after 8 attempts: registry answered 503\n"
        );
        assert_eq!(table(&[], now), "no dead letters\n");
    }

    #[test]
    fn detail_shows_headers_and_pretty_body() {
        let text = detail(&letter());
        assert!(text.contains("  regindex-attempts: 8\n"), "{text}");
        assert!(text.contains("\"repository\": \"apps/calc\""), "{text}");
    }

    #[test]
    fn problem_table() {
        use regindex::model::TagProblem;
        let now = Utc::now();
        assert_eq!(problems(&[], now), "no problems\n");
        let problem = StoredProblem {
            repository: "apps/calc".parse().unwrap(),
            problem: TagProblem {
                tag: "broken".parse().unwrap(),
                digest: regindex::model::Digest::sha256_of(b"x"),
                reason: "config is\nnot JSON".into(),
                partial: false,
            },
            first_seen: now - chrono::Duration::seconds(125),
        };
        let table = problems(&[problem], now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("REPOSITORY"), "{table}");
        assert!(lines[1].starts_with("apps/calc   broken"), "{table}");
        assert!(lines[1].contains("2m 5s"), "{table}");
        assert!(lines[1].ends_with("no       config is not JSON"), "{table}");
    }

    #[test]
    fn ages() {
        assert_eq!(age(Duration::from_secs(5)), "5s");
        assert_eq!(age(Duration::from_secs(125)), "2m 5s");
        assert_eq!(age(Duration::from_secs(90000)), "1d 1h");
    }
}
