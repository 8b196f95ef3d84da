//! `GET /`: a self-contained status page (no external assets).

use axum::extract::State;
use axum::response::Html;

use super::{status_data, AdminState};

pub(super) async fn status_page(State(s): State<AdminState>) -> Html<String> {
    let data = status_data(&s);
    let mut rows = String::new();
    if let Some(projections) = data["projections"].as_object() {
        for (name, p) in projections {
            if let Some(instances) = p["instances"].as_object() {
                for (instance, i) in instances {
                    rows.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{:.3}</td><td>{}</td></tr>",
                        escape(name),
                        escape(instance),
                        escape(&i["checkpoint"].to_string()),
                        i["lag_seconds"].as_f64().unwrap_or(0.0),
                        p["held_reads"],
                    ));
                }
            }
        }
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>tidemark</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.3em 1em;text-align:left}}</style>\
         </head><body><h1>tidemark</h1><p>Held reads: {}</p>\
         <table><tr><th>projection</th><th>instance</th><th>checkpoint</th><th>lag (s)</th><th>held</th></tr>{rows}</table>\
         <p><a href=\"/projections\">/projections</a> · <a href=\"/metrics\">/metrics</a></p></body></html>",
        data["held_reads_total"]
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
