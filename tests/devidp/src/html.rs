//! Minimal HTML helpers shared by the development provider and the echo upstream: escaping
//! and one page skeleton that always shows the development banner when there is one.

/// Escapes text for an HTML text node or a double-quoted attribute value.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A complete page: `title` is escaped here, `body` is trusted HTML the caller built with
/// [`escape`]. The banner, when set, is the first thing on the page.
pub(crate) fn page(banner: Option<&str>, title: &str, body: &str) -> String {
    let banner = banner
        .map(|b| {
            format!(
                "<div style=\"background:#b00020;color:#fff;padding:8px;font-weight:bold\">{}</div>\n",
                escape(b)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body style=\"font-family:sans-serif\">\n{banner}<h1>{title}</h1>\n{body}\n</body></html>\n",
        title = escape(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn page_carries_banner() {
        let p = page(Some("Dev <only>"), "T", "<p>b</p>");
        assert!(p.contains("Dev &lt;only&gt;"));
        assert!(p.contains("<p>b</p>"));
    }
}
