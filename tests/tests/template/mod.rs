//! infra/template.yaml read as the tests need it (shared by `infra.rs` and `aws_iam.rs`):
//! the parsed template, CloudFormation's intrinsics in short (`!Ref`, `!GetAtt`, `!If`) and
//! long form, every IAM statement, and each function's environment once deployed.

#![allow(dead_code)]

use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn template_path() -> PathBuf {
    root().join("infra/template.yaml")
}

pub fn template() -> Value {
    parse(&std::fs::read_to_string(template_path()).expect("infra/template.yaml"))
}

pub fn parse(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).expect("valid YAML")
}

/// `(tag without "!", value)` for a short-form intrinsic, or the long form `{Fn::X: v}`.
pub fn intrinsic(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((
            t.tag.to_string().trim_start_matches('!').to_string(),
            &t.value,
        )),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            let k = k.as_str()?;
            (k == "Ref" || k.starts_with("Fn::") || k == "Condition")
                .then(|| (k.trim_start_matches("Fn::").to_string(), v))
        }
        _ => None,
    }
}

/// The alternatives a value may take: both branches of `!If`, `AWS::NoValue` dropped.
pub fn alternatives(v: &Value) -> Vec<&Value> {
    match intrinsic(v) {
        Some((tag, args)) if tag == "If" => {
            let args = args
                .as_sequence()
                .expect("!If takes [condition, then, else]");
            args[1..].iter().flat_map(alternatives).collect()
        }
        Some((tag, args)) if tag == "Ref" && args.as_str() == Some("AWS::NoValue") => vec![],
        _ => vec![v],
    }
}

/// A value as a list (a scalar is a list of one), through `!If` branches.
pub fn items(v: &Value) -> Vec<&Value> {
    alternatives(v)
        .into_iter()
        .flat_map(|v| match v {
            Value::Sequence(s) => s.iter().flat_map(alternatives).collect(),
            other => vec![other],
        })
        .collect()
}

pub fn resources(t: &Value) -> Vec<(String, &Value)> {
    t.get("Resources")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str().unwrap_or("?").to_string(), v))
                .collect()
        })
        .unwrap_or_default()
}

pub fn of_type<'a>(t: &'a Value, ty: &str) -> Vec<(String, &'a Value)> {
    resources(t)
        .into_iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
        .collect()
}

pub fn prop<'a>(r: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(r.get("Properties")?, |v, k| v.get(*k))
}

pub fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Every statement of every IAM policy in the template: (where, statement).
pub fn statements(t: &Value) -> Vec<(String, &Value)> {
    let mut out = vec![];
    let mut docs: Vec<(String, &Value)> = vec![];
    for (name, r) in resources(t) {
        let ty = r.get("Type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "AWS::IAM::Role" => {
                for (i, p) in prop(r, &["Policies"])
                    .map(items)
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                {
                    if let Some(d) = p.get("PolicyDocument") {
                        docs.push((format!("{name}.Policies[{i}]"), d));
                    }
                }
            }
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" | "AWS::IAM::RolePolicy" => {
                if let Some(d) = prop(r, &["PolicyDocument"]) {
                    docs.push((name.clone(), d));
                }
            }
            // SAM policy templates and managed policies are not checkable here.
            "AWS::Serverless::Function" if prop(r, &["Policies"]).is_some() => {
                docs.push((format!("{name}.Policies (use a Role)"), &Value::Null));
            }
            _ => {}
        }
    }
    for (name, d) in docs {
        if d.is_null() {
            out.push((name, d));
            continue;
        }
        for (i, s) in d
            .get("Statement")
            .map(items)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            out.push((format!("{name}.Statement[{i}]"), s));
        }
    }
    out
}

/// Evaluates a condition of the template with the given parameter values.
pub fn condition(t: &Value, v: &Value, params: &std::collections::HashMap<String, String>) -> bool {
    let (tag, args) = intrinsic(v).expect("a condition is an intrinsic");
    let seq = || args.as_sequence().expect("condition arguments");
    match tag.as_str() {
        "Equals" => {
            let s = seq();
            resolve(t, &s[0], params) == resolve(t, &s[1], params)
        }
        "Not" => !condition(t, &seq()[0], params),
        "Or" => seq().iter().any(|c| condition(t, c, params)),
        "And" => seq().iter().all(|c| condition(t, c, params)),
        "Condition" => {
            let name = args.as_str().expect("condition name");
            let c = t
                .get("Conditions")
                .and_then(|cs| cs.get(name))
                .unwrap_or_else(|| panic!("condition {name} is not defined"));
            condition(t, c, params)
        }
        other => panic!("unsupported condition function {other}"),
    }
}

/// The value a function would see for `v` once deployed with `params`; `None` for
/// `AWS::NoValue`. Resource references and attributes become placeholder strings.
pub fn resolve(
    t: &Value,
    v: &Value,
    params: &std::collections::HashMap<String, String>,
) -> Option<String> {
    match intrinsic(v) {
        None => Some(match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => panic!("unexpected environment value {other:?}"),
        }),
        Some((tag, args)) => match tag.as_str() {
            "Ref" => {
                let name = args.as_str().expect("!Ref name");
                if name == "AWS::NoValue" {
                    None
                } else if let Some(p) = params.get(name) {
                    Some(p.clone())
                } else {
                    Some(format!("<{name}>"))
                }
            }
            "If" => {
                let s = args.as_sequence().expect("!If arguments");
                let name = s[0].as_str().expect("!If condition name");
                let c = t
                    .get("Conditions")
                    .and_then(|cs| cs.get(name))
                    .unwrap_or_else(|| panic!("condition {name} is not defined"));
                resolve(
                    t,
                    if condition(t, c, params) {
                        &s[1]
                    } else {
                        &s[2]
                    },
                    params,
                )
            }
            _ => Some(format!("<{tag}>")),
        },
    }
}

/// Each function's environment with the template's default parameters, overridden by `set`.
pub fn environments(t: &Value, set: &[(&str, &str)]) -> Vec<(String, Vec<(String, String)>)> {
    let mut params: std::collections::HashMap<String, String> = t
        .get("Parameters")
        .and_then(Value::as_mapping)
        .expect("Parameters")
        .iter()
        .map(|(k, p)| {
            let default = p.get("Default").map_or(String::new(), |d| {
                resolve(t, d, &Default::default()).unwrap_or_default()
            });
            (k.as_str().expect("name").to_string(), default)
        })
        .collect();
    for (k, v) in set {
        params.insert(k.to_string(), v.to_string());
    }
    let globals = t
        .get("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(|f| f.get("Environment"))
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    of_type(t, "AWS::Serverless::Function")
        .into_iter()
        .map(|(name, f)| {
            let mut vars = globals.clone();
            if let Some(own) = prop(f, &["Environment", "Variables"]).and_then(Value::as_mapping) {
                for (k, v) in own {
                    vars.insert(k.clone(), v.clone());
                }
            }
            let env = vars
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), resolve(t, v, &params)?)))
                .collect();
            (name, env)
        })
        .collect()
}
