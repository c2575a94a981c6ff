//! A label selector's syntax, checked before it is sent to the API server.
//!
//! The grammar is the one `kubectl` and the API server accept (`k8s.io/apimachinery/pkg/labels`):
//! comma-separated requirements `key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)`, `key notin (a,b)`, `key>1`, `key<1`. Neither kube nor k8s-openapi parses
//! this text, and a bad selector would otherwise surface only as a watch that keeps failing.

/// Checks `text` as a label selector; the error says which requirement is wrong and why.
pub fn check_label_selector(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Ok(());
    }
    split_requirements(text)?
        .into_iter()
        .try_for_each(|requirement| {
            check_requirement(requirement.trim()).map_err(|why| format!("{requirement:?}: {why}"))
        })
}

/// The requirements of `text`: split at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses".into()),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("a ')' without '('".into()),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("a '(' without ')'".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn check_requirement(requirement: &str) -> Result<(), String> {
    if let Some(key) = requirement.strip_prefix('!') {
        return check_key(key.trim());
    }
    let key_end = requirement
        .find(|c: char| "!=<>( \t".contains(c))
        .unwrap_or(requirement.len());
    check_key(&requirement[..key_end])?;
    let rest = requirement[key_end..].trim_start();
    if rest.is_empty() {
        return Ok(());
    }
    for op in ["!=", "==", "="] {
        if let Some(value) = rest.strip_prefix(op) {
            return check_value(value.trim());
        }
    }
    for op in ['<', '>'] {
        if let Some(value) = rest.strip_prefix(op) {
            let value = value.trim();
            return value
                .parse::<i64>()
                .map(drop)
                .map_err(|_| format!("{op} needs an integer, not {value:?}"));
        }
    }
    for op in ["notin", "in"] {
        if let Some(set) = rest.strip_prefix(op).map(str::trim_start)
            && set.starts_with('(')
        {
            return check_set(set);
        }
    }
    Err(format!(
        "expected =, ==, !=, in (...), notin (...), < or > after the key, not {rest:?}"
    ))
}

/// `(a, b)`: at least one value, nothing after the parenthesis.
fn check_set(set: &str) -> Result<(), String> {
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or("a set of values is written (a, b)")?;
    if inner.trim().is_empty() {
        return Err("a set needs at least one value".into());
    }
    inner.split(',').try_for_each(|v| check_value(v.trim()))
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
fn check_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let subdomain = prefix.len() <= 253
                && prefix.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !subdomain {
                return Err(format!("{prefix:?} is not a DNS subdomain prefix"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("a requirement needs a key".into());
    }
    check_name(name).map_err(|why| format!("key {key:?}: {why}"))
}

/// A label value: empty, or a name.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value).map_err(|why| format!("value {value:?}: {why}"))
}

/// At most 63 characters, alphanumerics at both ends, `-`, `_` and `.` between.
fn check_name(name: &str) -> Result<(), String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = name.len() <= 63
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err("at most 63 characters: letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit"
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_api_server_accepts() {
        for good in [
            "",
            "app.kubernetes.io/managed-by=kube-sentinel",
            "a==b,c!=d",
            "a = b",
            "tier in (web, db),!legacy",
            "env notin (dev),ready",
            "x=",
            "gen>3",
            "gen < 10",
            "example.com/Some_key.1=Value-2",
        ] {
            assert_eq!(check_label_selector(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        for bad in [
            "a b",
            "=x",
            "app in (a",
            "app in ()",
            "app in a",
            "a=b)",
            "a=-b",
            "UPPER.example/x=y",
            "a=b c",
            "gen>x",
            "!",
            &format!("k={}", "v".repeat(64)),
        ] {
            assert!(check_label_selector(bad).is_err(), "{bad} was accepted");
        }
    }
}
