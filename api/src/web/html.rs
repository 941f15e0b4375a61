//! HTML building blocks: escaping and the page layout. Every value that comes from the
//! registry (labels, names, tags) or from the request goes through [`esc`].

use std::fmt::Write as _;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query parameter value.
pub fn url_param(value: &str) -> String {
    utf8_percent_encode(value, QUERY_ENCODE).to_string()
}

const STYLE: &str = "
:root{--fg:#1d1f21;--muted:#5f6368;--bg:#f6f7f9;--card:#fff;--line:#dde1e6;--accent:#1a5fb4;--chip:#eef1f5}
@media (prefers-color-scheme:dark){:root{--fg:#e8eaed;--muted:#a0a6ad;--bg:#17191c;--card:#212428;--line:#33373d;--accent:#78aeed;--chip:#2c3036}}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Cantarell,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header{background:var(--card);border-bottom:1px solid var(--line);padding:.75rem 1rem}
header .in,main{max-width:60rem;margin:0 auto}
header h1{font-size:1.25rem;margin:0 0 .5rem}
form.search{display:flex;gap:.5rem}
form.search input{flex:1;min-width:0;font:inherit;padding:.5rem .75rem;border:1px solid var(--line);border-radius:.5rem;background:var(--bg);color:var(--fg)}
form.search button{font:inherit;padding:.5rem 1rem;border:0;border-radius:.5rem;background:var(--accent);color:#fff}
main{padding:1rem}
.count{color:var(--muted);margin:.25rem 0 1rem}
.cards{list-style:none;margin:0;padding:0;display:grid;gap:.75rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:.75rem;padding:1rem;display:flex;gap:1rem;align-items:flex-start}
.icon{width:64px;height:64px;flex:none;border-radius:.75rem;object-fit:contain}
.noicon{width:64px;height:64px;flex:none;border-radius:.75rem;background:var(--chip);display:flex;align-items:center;justify-content:center;font-size:1.75rem;color:var(--muted)}
.body{min-width:0;flex:1}
.card h2,.card h3{margin:0;font-size:1.1rem}
.name{color:var(--muted);font-family:ui-monospace,monospace;font-size:.85rem;overflow-wrap:anywhere}
.desc{margin:.35rem 0}
.chips{display:flex;flex-wrap:wrap;gap:.3rem;margin:.35rem 0}
.chip{background:var(--chip);border-radius:1rem;padding:0 .55rem;font-size:.8rem}
.chip.arch{border:1px solid var(--line);background:transparent}
code.pull{display:block;user-select:all;-webkit-user-select:all;background:var(--chip);border-radius:.4rem;padding:.3rem .5rem;font-size:.85rem;overflow-x:auto;white-space:nowrap}
table{border-collapse:collapse;width:100%;font-size:.9rem}
td,th{text-align:left;padding:.3rem .4rem;border-top:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
details{margin:.35rem 0}summary{cursor:pointer;color:var(--muted)}
dl.labels{display:grid;grid-template-columns:minmax(8rem,auto) 1fr;gap:.1rem .75rem;font-size:.8rem;margin:.3rem 0}
dl.labels dt{font-family:ui-monospace,monospace;color:var(--muted);overflow-wrap:anywhere}dl.labels dd{margin:0;overflow-wrap:anywhere;white-space:pre-wrap}
nav.pages{display:flex;justify-content:space-between;margin:1rem 0}
@media (max-width:30rem){.card{flex-direction:column}}
";

/// A complete page around `body` (already HTML).
pub fn layout(site_title: &str, page_title: &str, query: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + STYLE.len() + 1024);
    let title = if page_title.is_empty() {
        esc(site_title)
    } else {
        format!("{} · {}", esc(page_title), esc(site_title))
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <header><div class=\"in\"><h1><a href=\"/\">{site}</a></h1>\
         <form class=\"search\" method=\"get\" action=\"/\" role=\"search\">\
         <input type=\"search\" name=\"q\" value=\"{query}\" placeholder=\"Search repositories\" aria-label=\"Search repositories\">\
         <button type=\"submit\">Search</button></form></div></header>\
         <main>{body}</main></body></html>\n",
        site = esc(site_title),
        query = esc(query),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(esc("plain é"), "plain é");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(url_param("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn layout_escapes_titles_and_query() {
        let page = layout("<Site>", "\"T\"", "q\"><x>", "<p>body</p>");
        assert!(page.contains("<title>&quot;T&quot; · &lt;Site&gt;</title>"));
        assert!(page.contains("value=\"q&quot;&gt;&lt;x&gt;\""));
        assert!(page.contains("<p>body</p>"));
        assert!(!page.contains("<x>"));
    }
}
