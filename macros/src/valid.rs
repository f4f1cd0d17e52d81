//! Validation of event type strings, topics and key paths at build time.

use syn::LitStr;

/// Checks `org.openedx.<subdomain>.<subject>.<action>.v<N>`.
pub fn event_type(lit: &LitStr) -> syn::Result<String> {
    let value = lit.value();
    let fail = |why: &str| {
        Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid event type {value:?}: {why}; expected \"org.openedx.<subdomain>.<subject>.<action>.v<N>\" (lowercase), e.g. \"org.openedx.learning.course.enrollment.created.v1\""
            ),
        ))
    };
    let Some(rest) = value.strip_prefix("org.openedx.") else {
        return fail("it must start with `org.openedx.`");
    };
    let segments: Vec<&str> = rest.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return fail("it has an empty segment");
    }
    if let Some(bad) = segments.iter().find(|s| {
        !s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    }) {
        return fail(&format!(
            "segment `{bad}` may only hold lowercase letters, digits, `_` and `-`"
        ));
    }
    if segments.len() < 3 {
        return fail("it needs a subdomain, a subject and an action");
    }
    // The `.v<N>` suffix is not enforced: openedx-events 11 has two event types
    // without it (org.openedx.authz.role_assignment.*).
    Ok(value)
}

/// The hidden alias name the event attribute emits for a type string.
pub fn alias_name(event_type: &str) -> String {
    format!(
        "__openedx_event__{}",
        event_type.replace('.', "__").replace('-', "_x2d_")
    )
}

/// Kafka's topic-name rules.
pub fn topic(lit: &LitStr) -> syn::Result<String> {
    let t = lit.value();
    let why = if t.is_empty() {
        Some("it is empty".to_owned())
    } else if t.len() > 249 {
        Some(format!("it has {} characters; at most 249 are allowed", t.len()))
    } else if t == "." || t == ".." {
        Some("`.` and `..` are reserved".to_owned())
    } else {
        t.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("{c:?} is not allowed; use ASCII letters, digits, `.`, `_` and `-`"))
    };
    match why {
        Some(why) => Err(syn::Error::new(lit.span(), format!("invalid topic {t:?}: {why}"))),
        None => Ok(t),
    }
}

/// Splits a key path into segments that are Rust field names.
pub fn key_path(lit: &LitStr) -> syn::Result<Vec<String>> {
    let p = lit.value();
    let segments: Vec<String> = p.split('.').map(str::to_owned).collect();
    for s in &segments {
        let ok = !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !ok {
            return Err(syn::Error::new(
                lit.span(),
                format!("invalid event_key_field {p:?}: segment {s:?} is not a field name; write a period-delimited path of fields, e.g. \"xblock_info.usage_key\""),
            ));
        }
    }
    Ok(segments)
}
