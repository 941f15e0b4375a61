//! The pages, as pure functions from what the store returned to HTML.

use std::fmt::Write as _;

use regindex::catalog::describe::truncate;
use regindex::catalog::icons;
use regindex::index::{ImageFields, RepositoryResult};
use regindex::store::StoredProblem;

use super::html::{esc, layout, url_param};

/// Tags shown on a repository's card before "+N more".
const CARD_TAGS: usize = 8;
/// Label values longer than this are cut on the repository page.
const LABEL_CHARS: usize = 600;

/// What every page needs to know about the site.
#[derive(Debug, Clone)]
pub struct Site {
    pub title: String,
    /// `host[:port][/path]` of pull references.
    pub pull_host: String,
    /// `icons.base_url`.
    pub icon_base: Option<String>,
}

impl Site {
    /// The `src` of a repository icon: a stored icon's URL, or an external http(s) URL.
    pub fn icon_src(&self, icon: Option<&str>) -> Option<String> {
        let icon = icon?;
        if icons::parse_file_name(icon).is_some() {
            return Some(icons::icon_url(self.icon_base.as_deref(), icon));
        }
        let lower = icon.get(..8).unwrap_or(icon).to_ascii_lowercase();
        (lower.starts_with("https://") || lower.starts_with("http://")).then(|| icon.to_owned())
    }

    fn pull(&self, name: &str, reference: &str) -> String {
        let separator = if reference.contains(':') { '@' } else { ':' };
        format!("{}/{name}{separator}{reference}", self.pull_host)
    }
}

/// A repository as listed on `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub name: String,
    pub title: String,
    pub description: String,
    /// A stored icon's file name or an http(s) URL.
    pub icon: Option<String>,
    /// Sorted.
    pub tags: Vec<String>,
    pub architectures: Vec<String>,
}

/// The tag people most likely want: `latest`, else the greatest tag.
pub fn pull_tag(tags: &[String]) -> Option<&str> {
    if tags.iter().any(|t| t == "latest") {
        return Some("latest");
    }
    tags.iter().max().map(String::as_str)
}

fn icon_html(site: &Site, icon: Option<&str>, title: &str) -> String {
    match site.icon_src(icon) {
        Some(src) => format!(
            "<img class=\"icon\" src=\"{}\" alt=\"\" width=\"64\" height=\"64\" loading=\"lazy\">",
            esc(&src)
        ),
        None => {
            let initial: String = title
                .chars()
                .find(|c| c.is_alphanumeric())
                .into_iter()
                .flat_map(char::to_uppercase)
                .collect();
            format!(
                "<div class=\"noicon\" aria-hidden=\"true\">{}</div>",
                esc(&initial)
            )
        }
    }
}

fn chips(out: &mut String, class: &str, values: &[String], max: usize) {
    if values.is_empty() {
        return;
    }
    out.push_str("<div class=\"chips\">");
    for value in values.iter().take(max) {
        let _ = write!(out, "<span class=\"chip {class}\">{}</span>", esc(value));
    }
    if values.len() > max {
        let _ = write!(
            out,
            "<span class=\"chip\">+{} more</span>",
            values.len() - max
        );
    }
    out.push_str("</div>");
}

fn card_html(out: &mut String, site: &Site, card: &Card) {
    let _ = write!(
        out,
        "<li class=\"card\">{icon}<div class=\"body\"><h2><a href=\"/repository/{name}\">{title}</a></h2>\
         <div class=\"name\">{name_text}</div>",
        icon = icon_html(site, card.icon.as_deref(), &card.title),
        name = esc(&card.name),
        title = esc(&card.title),
        name_text = esc(&card.name),
    );
    if !card.description.is_empty() {
        let _ = write!(
            out,
            "<p class=\"desc\">{}</p>",
            esc(&truncate(&card.description, 300))
        );
    }
    chips(out, "tag", &card.tags, CARD_TAGS);
    chips(out, "arch", &card.architectures, 16);
    if let Some(tag) = pull_tag(&card.tags) {
        let _ = write!(
            out,
            "<code class=\"pull\">{}</code>",
            esc(&site.pull(&card.name, tag))
        );
    }
    out.push_str("</div></li>");
}

/// `/` and `/?q=...`: one page of repositories.
pub fn index_page(
    site: &Site,
    query: &str,
    cards: &[Card],
    total: u64,
    page: u32,
    page_size: u32,
) -> String {
    let mut body = String::new();
    let count = match (query.is_empty(), total) {
        (true, 1) => "1 repository".to_owned(),
        (true, n) => format!("{n} repositories"),
        (false, 0) => format!("No repository matches “{}”.", esc(query)),
        (false, 1) => format!("1 repository matches “{}”.", esc(query)),
        (false, n) => format!("{n} repositories match “{}”.", esc(query)),
    };
    let _ = write!(body, "<p class=\"count\">{count}</p>");
    if !cards.is_empty() {
        body.push_str("<ul class=\"cards\">");
        for card in cards {
            card_html(&mut body, site, card);
        }
        body.push_str("</ul>");
    }
    let pages = total.div_ceil(u64::from(page_size.max(1)));
    if pages > 1 {
        let link = |p: u32| {
            let mut href = format!("/?page={p}");
            if !query.is_empty() {
                href.push_str(&format!("&q={}", url_param(query)));
            }
            esc(&href)
        };
        body.push_str("<nav class=\"pages\">");
        if page > 1 {
            let _ = write!(
                body,
                "<a rel=\"prev\" href=\"{}\">← Previous</a>",
                link(page - 1)
            );
        } else {
            body.push_str("<span></span>");
        }
        let _ = write!(body, "<span>Page {page} of {pages}</span>");
        if u64::from(page) < pages {
            let _ = write!(
                body,
                "<a rel=\"next\" href=\"{}\">Next →</a>",
                link(page + 1)
            );
        } else {
            body.push_str("<span></span>");
        }
        body.push_str("</nav>");
    }
    let title = if query.is_empty() {
        String::new()
    } else {
        format!("Search: {query}")
    };
    layout(&site.title, &title, query, &body)
}

fn labels_html(out: &mut String, title: &str, map: &regindex::model::StringMap) {
    if map.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<details><summary>{} ({})</summary><dl class=\"labels\">",
        esc(title),
        map.len()
    );
    for (key, value) in map {
        let shown = if icons::is_data_uri(value) {
            format!("(data URI, {} characters)", value.len())
        } else {
            truncate(value, LABEL_CHARS)
        };
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(key), esc(&shown));
    }
    out.push_str("</dl></details>");
}

fn platform(image: &ImageFields) -> String {
    match (image.os.is_empty(), image.architecture.is_empty()) {
        (true, true) => "unknown".into(),
        _ => format!("{}/{}", image.os, image.architecture),
    }
}

/// The tags the index could not use, for the repository's operators and users.
fn problems_html(out: &mut String, problems: &[StoredProblem]) {
    if problems.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h2>Tags not indexed</h2><table class=\"problems\"><tr><th>Tag</th><th>Digest</th><th>Indexed</th><th>Reason</th><th>Since</th></tr>"
    );
    for p in problems {
        let _ = write!(
            out,
            "<tr><td>{tag}</td><td class=\"name\">{digest}</td><td>{indexed}</td><td>{reason}</td><td>{since}</td></tr>",
            tag = esc(p.problem.tag.as_str()),
            digest = esc(p.problem.digest.as_str()),
            indexed = if p.problem.partial { "in part" } else { "no" },
            reason = esc(&truncate(&p.problem.reason, LABEL_CHARS)),
            since = esc(&p.first_seen.format("%Y-%m-%d %H:%M UTC").to_string()),
        );
    }
    out.push_str("</table>");
}

/// `/repository/<name>` of a repository with no usable tag: only what went wrong.
pub fn problems_page(site: &Site, name: &str, problems: &[StoredProblem]) -> String {
    let mut body = format!(
        "<p class=\"count\">No tag of “{}” could be indexed.</p>",
        esc(name)
    );
    problems_html(&mut body, problems);
    layout(&site.title, name, "", &body)
}

/// `/repository/<name>`: the repository's images and lists, and its tags that could not
/// be indexed.
pub fn repository_page(
    site: &Site,
    card: &Card,
    contents: &RepositoryResult,
    problems: &[StoredProblem],
) -> String {
    let mut body = String::new();
    body.push_str("<ul class=\"cards\">");
    card_html(&mut body, site, card);
    body.push_str("</ul>");
    problems_html(&mut body, problems);

    if !contents.images.is_empty() {
        let _ = write!(body, "<h2>Images</h2><ul class=\"cards\">");
        for image in &contents.images {
            let f = &image.image;
            let _ = write!(
                body,
                "<li class=\"card\"><div class=\"body\"><h3>{tags}</h3><div class=\"name\">{digest}</div>\
                 <div class=\"chips\"><span class=\"chip arch\">{platform}</span><span class=\"chip\">{media}</span></div>\
                 <code class=\"pull\">{pull}</code>",
                tags = esc(&image.tags.join(", ")),
                digest = esc(&f.digest),
                platform = esc(&platform(f)),
                media = esc(&f.media_type),
                pull = esc(&site.pull(&contents.name, &f.digest)),
            );
            labels_html(&mut body, "Labels", &f.labels);
            labels_html(&mut body, "Annotations", &f.annotations);
            body.push_str("</div></li>");
        }
        body.push_str("</ul>");
    }
    if !contents.lists.is_empty() {
        let _ = write!(body, "<h2>Image lists</h2><ul class=\"cards\">");
        for list in &contents.lists {
            let _ = write!(
                body,
                "<li class=\"card\"><div class=\"body\"><h3>{tags}</h3><div class=\"name\">{digest}</div>\
                 <div class=\"chips\"><span class=\"chip\">{media}</span></div>\
                 <code class=\"pull\">{pull}</code><table><tr><th>Platform</th><th>Digest</th></tr>",
                tags = esc(&list.tags.join(", ")),
                digest = esc(&list.digest),
                media = esc(&list.media_type),
                pull = esc(&site.pull(&contents.name, &list.digest)),
            );
            for entry in &list.images {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td class=\"name\">{}</td></tr>",
                    esc(&platform(entry)),
                    esc(&entry.digest)
                );
            }
            body.push_str("</table>");
            for entry in &list.images {
                labels_html(
                    &mut body,
                    &format!("Labels of {}", platform(entry)),
                    &entry.labels,
                );
            }
            body.push_str("</div></li>");
        }
        body.push_str("</ul>");
    }
    layout(&site.title, &card.title, "", &body)
}

/// The 404 page.
pub fn not_found_page(site: &Site, what: &str) -> String {
    let body = format!(
        "<p class=\"count\">There is no repository “{}” in this index.</p><p><a href=\"/\">All repositories</a></p>",
        esc(what)
    );
    layout(&site.title, "Not found", "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regindex::index::{ImageResult, ListResult};

    fn site() -> Site {
        Site {
            title: "Registry".into(),
            pull_host: "registry.example.org".into(),
            icon_base: None,
        }
    }

    fn card() -> Card {
        Card {
            name: "apps/calc".into(),
            title: "Calc <b>".into(),
            description: "Adds & subtracts".into(),
            icon: Some(format!("{}.png", "a".repeat(64))),
            tags: vec!["1.0".into(), "latest".into()],
            architectures: vec!["amd64".into(), "arm64".into()],
        }
    }

    #[test]
    fn pull_tags() {
        assert_eq!(pull_tag(&["1".into(), "latest".into()]), Some("latest"));
        assert_eq!(pull_tag(&["1.0".into(), "2.0".into()]), Some("2.0"));
        assert_eq!(pull_tag(&[]), None);
    }

    #[test]
    fn icon_sources() {
        let site = site();
        let file = format!("{}.png", "a".repeat(64));
        assert_eq!(site.icon_src(Some(&file)), Some(format!("/icons/{file}")));
        assert_eq!(
            site.icon_src(Some("https://x/i.png")).as_deref(),
            Some("https://x/i.png")
        );
        assert_eq!(site.icon_src(Some("javascript:alert(1)")), None);
        assert_eq!(site.icon_src(None), None);
    }

    #[test]
    fn index_page_shows_cards_escaped() {
        let page = index_page(&site(), "", &[card()], 1, 1, 10);
        assert!(
            page.contains("<a href=\"/repository/apps/calc\">Calc &lt;b&gt;</a>"),
            "{page}"
        );
        assert!(page.contains("Adds &amp; subtracts"));
        assert!(page.contains("<code class=\"pull\">registry.example.org/apps/calc:latest</code>"));
        assert!(page.contains(&format!("src=\"/icons/{}.png\"", "a".repeat(64))));
        assert!(page.contains(">arm64<"));
        assert!(page.contains("1 repository"));
        assert!(!page.contains("<nav"));
    }

    #[test]
    fn search_results_paginate_and_keep_the_query() {
        let page = index_page(&site(), "calc & co", &[card()], 25, 2, 10);
        assert!(page.contains("25 repositories match “calc &amp; co”."));
        assert!(
            page.contains("href=\"/?page=1&amp;q=calc%20%26%20co\""),
            "{page}"
        );
        assert!(page.contains("href=\"/?page=3&amp;q=calc%20%26%20co\""));
        assert!(page.contains("Page 2 of 3"));
        let none = index_page(&site(), "zzz", &[], 0, 1, 10);
        assert!(none.contains("No repository matches “zzz”."));
    }

    #[test]
    fn repository_page_lists_images_and_lists() {
        let fields = |arch: &str| ImageFields {
            digest: format!("sha256:{arch}"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            os: "linux".into(),
            architecture: arch.into(),
            annotations: Default::default(),
            labels: [
                (
                    "org.freedesktop.appstream.icon-64".to_owned(),
                    "data:image/png;base64,AAAA".to_owned(),
                ),
                ("x".to_owned(), "<script>".to_owned()),
            ]
            .into_iter()
            .collect(),
        };
        let contents = RepositoryResult {
            name: "apps/calc".into(),
            images: vec![ImageResult {
                tags: vec!["1.0".into(), "latest".into()],
                image: fields("amd64"),
            }],
            lists: vec![ListResult {
                tags: vec!["multi".into()],
                digest: "sha256:list".into(),
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                images: vec![fields("arm64")],
            }],
        };
        let problem = StoredProblem {
            repository: "apps/calc".parse().unwrap(),
            problem: regindex::model::TagProblem {
                tag: "broken".parse().unwrap(),
                digest: regindex::model::Digest::sha256_of(b"x"),
                reason: "config <b>not JSON</b>".into(),
                partial: false,
            },
            first_seen: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        };
        let page = repository_page(&site(), &card(), &contents, std::slice::from_ref(&problem));
        assert!(page.contains("<h2>Tags not indexed</h2>"));
        assert!(page.contains("<td>broken</td>"));
        assert!(page.contains("config &lt;b&gt;not JSON&lt;/b&gt;"));
        assert!(page.contains("1970-01-01 00:00 UTC"));
        let only = problems_page(&site(), "apps/x", &[problem]);
        assert!(only.contains("No tag of “apps/x” could be indexed."));
        assert!(only.contains("<td>broken</td>"));
        assert!(page.contains("<h3>1.0, latest</h3>"));
        assert!(page.contains("registry.example.org/apps/calc@sha256:amd64"));
        assert!(page.contains("linux/arm64"));
        assert!(page.contains("(data URI, 26 characters)"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>"));
        assert!(not_found_page(&site(), "<x>").contains("“&lt;x&gt;”"));
    }
}
