//! Label and field selectors as the API server parses them from `labelSelector` and
//! `fieldSelector` query parameters, plus matching them against JSON objects. It does not know
//! about HTTP; a parse failure is a [`SelectorError`] the API layer turns into a 400.

use serde_json::Value;

/// A selector could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("unable to parse requirement {requirement:?}: {reason}")]
pub struct SelectorError {
    requirement: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(v), Some(actual)) => actual == v,
            (Op::Eq(_), None) => false,
            (Op::NotEq(v), actual) => actual != Some(v.as_str()),
            (Op::In(vs), Some(actual)) => vs.iter().any(|v| v == actual),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), actual) => actual.is_none_or(|a| !vs.iter().any(|v| v == a)),
            (Op::Exists, actual) => actual.is_some(),
            (Op::NotExists, actual) => actual.is_none(),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn error(requirement: &str, reason: &'static str) -> SelectorError {
    SelectorError {
        requirement: requirement.to_string(),
        reason,
    }
}

fn parse_set(requirement: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| error(requirement, "expected a parenthesised set of values"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    let valid_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        if !valid_key(key) {
            return Err(error(part, "invalid key"));
        }
        return Ok(Requirement {
            key: key.to_string(),
            op: Op::NotExists,
        });
    }
    for (token, make) in [
        ("!=", Op::NotEq as fn(String) -> Op),
        ("==", Op::Eq),
        ("=", Op::Eq),
    ] {
        if let Some((key, value)) = part.split_once(token) {
            let key = key.trim();
            if !valid_key(key) {
                return Err(error(part, "invalid key"));
            }
            return Ok(Requirement {
                key: key.to_string(),
                op: make(value.trim().to_string()),
            });
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    if !valid_key(key) {
        return Err(error(part, "invalid key"));
    }
    let op = if rest.is_empty() {
        Op::Exists
    } else if let Some(set) = rest.strip_prefix("notin") {
        Op::NotIn(parse_set(part, set)?)
    } else if let Some(set) = rest.strip_prefix("in") {
        Op::In(parse_set(part, set)?)
    } else {
        return Err(error(part, "expected an operator"));
    };
    Ok(Requirement {
        key: key.to_string(),
        op,
    })
}

impl LabelSelector {
    /// Parses a selector such as `app=web,tier in (a,b),!legacy`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        split_top_level(input)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Builds an equality selector from a `matchLabels` map.
    pub fn from_match_labels(labels: &serde_json::Map<String, Value>) -> Self {
        Self(
            labels
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::Eq(v.as_str().unwrap_or_default().to_string()),
                })
                .collect(),
        )
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.0.iter().all(|r| {
            let value = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            r.matches(value)
        })
    }

    /// Whether the selector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FieldSelector {
    /// Parses a field selector; only `=`, `==` and `!=` are allowed, and only on the fields
    /// `supported` names (Kubernetes answers 400 for any other field).
    pub fn parse(input: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let requirements: Vec<Requirement> = split_top_level(input)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        for r in &requirements {
            if !matches!(r.op, Op::Eq(_) | Op::NotEq(_)) {
                return Err(error(&r.key, "field selectors only support =, == and !="));
            }
            if !supported.contains(&r.key.as_str()) {
                return Err(error(&r.key, "field label not supported"));
            }
        }
        Ok(Self(requirements))
    }

    /// The same selector on other field names: each label replaced by `stored(label)`, for
    /// resources whose selectable labels differ from the stored fields they select on.
    pub fn relabelled(mut self, stored: impl Fn(&str) -> &str) -> Self {
        for r in &mut self.0 {
            r.key = stored(&r.key).to_string();
        }
        self
    }

    /// Whether the object's fields satisfy the selector; a missing field compares as "".
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|r| {
            let pointer = format!("/{}", r.key.replace('.', "/"));
            let value = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            r.matches(Some(&value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels}})
    }

    #[test]
    fn every_label_operator_selects_as_kubernetes_does() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("tier in (front, back)", true),
            ("tier notin (front)", false),
            ("missing notin (front)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier in (back)", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector);
            assert!(parsed.is_ok(), "{selector}");
            let parsed = parsed.unwrap_or_default();
            assert_eq!(parsed.matches(&p), expected, "{selector}");
        }
    }

    #[test]
    fn field_selectors_reject_unsupported_fields() {
        let supported = ["metadata.name", "metadata.namespace"];
        assert!(FieldSelector::parse("spec.foo=x", &supported).is_err());
        let name = FieldSelector::parse("metadata.name=p", &supported).unwrap_or_default();
        assert!(name.matches(&pod(json!({}))));
        let not = FieldSelector::parse("metadata.namespace!=default", &supported);
        assert!(!not.unwrap_or_default().matches(&pod(json!({}))));
    }
}
