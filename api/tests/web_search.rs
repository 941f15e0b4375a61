//! `/v1/search` and the search box of `/`: ranking, name matches, pagination, bad input.

mod common;

use common::start;
use regindex_testkit::app::App;
use regindex_testkit::ImageSpec;
use serde_json::Value;

/// Pushes and indexes the repositories every search test uses.
async fn seeded() -> App {
    let stack = start(|_| {}).await;
    let images = [
        (
            "apps/calculator",
            ImageSpec::new("amd64")
                .annotation("org.opencontainers.image.title", "Calculator")
                .annotation(
                    "org.opencontainers.image.description",
                    "Perform arithmetic, scientific or financial calculations",
                ),
        ),
        (
            "tools/bc",
            ImageSpec::new("amd64")
                .label("name", "bc")
                .label("description", "An arbitrary precision calculator language"),
        ),
        (
            "apps/notes",
            ImageSpec::new("amd64")
                .label("io.k8s.display-name", "Notes")
                .label("io.k8s.description", "Write things down"),
        ),
        (
            "library/fedora",
            ImageSpec::new("amd64").label("org.label-schema.name", "Fedora base image"),
        ),
    ];
    for (repository, spec) in &images {
        stack
            .registry
            .push_image(repository, Some("latest"), spec)
            .await
            .unwrap();
        stack.refetch(repository).await.unwrap();
    }
    stack
}

async fn search(stack: &App, query: &str) -> Value {
    let response = stack.get(&format!("/v1/search?{query}")).await.unwrap();
    assert_eq!(response.status(), 200, "{query}");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

fn names(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn ranked_full_text_and_name_matches() {
    let stack = seeded().await;

    // The repository named after the query first, then one that only mentions it.
    let body = search(&stack, "q=calculator").await;
    assert_eq!(names(&body), ["apps/calculator", "tools/bc"]);
    assert_eq!(body["num_results"], 2);
    assert_eq!(body["query"], "calculator");
    assert_eq!(
        body["results"][0],
        serde_json::json!({
            "name": "apps/calculator",
            "description": "Perform arithmetic, scientific or financial calculations",
            "star_count": 0, "is_official": false, "is_automated": false
        })
    );

    // A prefix of the name finds the repository, ahead of description prefix matches.
    assert_eq!(names(&search(&stack, "q=calc").await)[0], "apps/calculator");
    // Stemming: "calculation" finds "calculations" (and "calculator": same English stem).
    assert_eq!(
        names(&search(&stack, "q=calculation").await)[0],
        "apps/calculator"
    );
    assert_eq!(
        names(&search(&stack, "q=arithmetic").await),
        ["apps/calculator"]
    );
    // Words from titles and descriptions; web-search syntax.
    assert_eq!(names(&search(&stack, "q=things").await), ["apps/notes"]);
    assert_eq!(
        names(&search(&stack, "q=calculator%20-arbitrary").await),
        ["apps/calculator"]
    );
    assert_eq!(names(&search(&stack, "q=fedora").await), ["library/fedora"]);
    // Substring of a full name.
    assert_eq!(names(&search(&stack, "q=tools%2Fb").await), ["tools/bc"]);
    // Nothing.
    let none = search(&stack, "q=zzzz").await;
    assert_eq!(
        (none["num_results"].clone(), none["num_pages"].clone()),
        (0.into(), 0.into())
    );
    // LIKE wildcards are literal.
    assert_eq!(names(&search(&stack, "q=%25").await), Vec::<String>::new());
    assert_eq!(names(&search(&stack, "q=_").await), Vec::<String>::new());
    stack.finish().await;
}

#[tokio::test]
async fn pagination_and_bad_parameters() {
    let stack = seeded().await;
    let all = search(&stack, "").await;
    assert_eq!(
        names(&all),
        [
            "apps/calculator",
            "apps/notes",
            "library/fedora",
            "tools/bc"
        ]
    );
    let page = search(&stack, "n=3&page=2").await;
    assert_eq!(names(&page), ["tools/bc"]);
    assert_eq!(
        (
            page["num_pages"].clone(),
            page["num_results"].clone(),
            page["page"].clone(),
            page["page_size"].clone()
        ),
        (2.into(), 4.into(), 2.into(), 3.into())
    );
    let past = search(&stack, "n=3&page=5").await;
    assert_eq!(names(&past), Vec::<String>::new());
    assert_eq!(past["num_results"], 4);

    for (query, parameter) in [
        ("n=0", "n"),
        ("n=101", "n"),
        ("n=x", "n"),
        ("page=0", "page"),
        ("page=-1", "page"),
    ] {
        let response = stack.get(&format!("/v1/search?q=a&{query}")).await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_query");
        assert_eq!(body["detail"]["parameter"], parameter, "{query}");
        assert!(
            body["message"].as_str().unwrap().contains(parameter),
            "{body}"
        );
    }
    // A repeated parameter is not a v1 search.
    let response = stack.get("/v1/search?q=a&q=b").await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "bad_query"
    );
    let long = "x".repeat(300);
    assert_eq!(
        stack
            .get(&format!("/v1/search?q={long}"))
            .await
            .unwrap()
            .status(),
        400
    );
    stack.finish().await;
}

#[tokio::test]
async fn search_box_of_the_web_page() {
    let stack = seeded().await;
    let page = stack.get("/?q=calc").await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let calculator = html
        .find("/repository/apps/calculator")
        .expect("calculator listed");
    let bc = html
        .find("/repository/tools/bc")
        .expect("bc listed (description matches calc*)");
    assert!(calculator < bc, "ranked");
    assert!(!html.contains("/repository/apps/notes"));
    assert!(html.contains("value=\"calc\""));
    assert_eq!(stack.get("/?page=0").await.unwrap().status(), 400);
    stack.finish().await;
}
