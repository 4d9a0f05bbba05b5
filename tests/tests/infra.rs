//! infra/template.yaml (AWS SAM) checked without AWS: cfn-lint (pinned, in the project
//! `.venv`, which `scripts/moto.sh --python` installs when missing) reports no errors, and
//! the template's own rules hold: every function crate has a resource whose code and binary
//! exist, no IAM statement allows a wildcard action or a wildcard resource where a narrower
//! one exists, the table has PITR, encryption and TTL on the attribute the adapter writes,
//! the queue has its dead-letter queue and partial batch responses, routes have authorizers,
//! and the console sits privately behind CloudFront, which passes the API its Authorization
//! header uncached.
//! That each role allows exactly what its function calls is `aws_iam.rs`.
//!
//! Each checker returns the list of problems it found; the `checker_*` tests feed it small bad
//! templates, so a checker that stopped looking would fail here.
//!
//! CloudFormation's short tags (`!Ref`, `!GetAtt`, `!Sub`, `!If`) are kept by serde_yaml_ng
//! as tagged values, which the checkers read like the long forms (`Ref`, `Fn::If`).

mod template;

use serde_yaml_ng::Value;
use std::path::Path;
use std::process::Command;
use template::*;

// ------------------------------------------------------------------ functions

/// Function crates under functions/: those with a binary (the shared library has none).
fn function_crates() -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    for entry in std::fs::read_dir(root().join("functions")).expect("functions/") {
        let dir = entry.expect("dir entry").path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let bins = binaries(&manifest);
        if !bins.is_empty() {
            out.push((
                dir.file_name().unwrap().to_string_lossy().into_owned(),
                bins,
            ));
        }
    }
    out.sort();
    out
}

/// Binary names a Cargo manifest builds: its `[[bin]]` names, or the package name when it
/// has `src/main.rs` and no `[[bin]]`.
fn binaries(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("Cargo.toml");
    let mut bins = vec![];
    let mut package = None;
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if let Some(v) = line.strip_prefix("name").map(str::trim_start)
            && let Some(v) = v.strip_prefix('=')
        {
            let name = v.trim().trim_matches('"').to_string();
            match section.as_str() {
                "[[bin]]" => bins.push(name),
                "[package]" => package = Some(name),
                _ => {}
            }
        }
    }
    if bins.is_empty() && manifest.with_file_name("src/main.rs").is_file() {
        bins.extend(package);
    }
    bins
}

/// Problems with the Lambda functions: each function crate has a resource; each resource
/// builds with cargo-lambda from an existing crate and binary, on provided.al2023 / arm64.
fn function_problems(
    t: &Value,
    template_dir: &Path,
    crates: &[(String, Vec<String>)],
) -> Vec<String> {
    let mut problems = vec![];
    let globals = t.get("Globals").and_then(|g| g.get("Function"));
    let global = |k: &str| globals.and_then(|g| g.get(k));
    let mut covered = vec![];
    for (name, r) in of_type(t, "AWS::Serverless::Function") {
        let p = r.get("Properties");
        let get = |k: &str| p.and_then(|p| p.get(k)).or_else(|| global(k));
        if p.and_then(|p| p.get("InlineCode")).is_some() {
            continue; // deploy-time helpers written inline (the platform application provider)
        }
        let Some(code) = p.and_then(|p| p.get("CodeUri")).and_then(Value::as_str) else {
            problems.push(format!("{name}: no CodeUri"));
            continue;
        };
        let dir = template_dir.join(code);
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            problems.push(format!("{name}: CodeUri {code} has no Cargo.toml"));
            continue;
        }
        let meta = r.get("Metadata");
        if meta
            .and_then(|m| m.get("BuildMethod"))
            .and_then(Value::as_str)
            != Some("rust-cargolambda")
        {
            problems.push(format!(
                "{name}: Metadata.BuildMethod is not rust-cargolambda"
            ));
        }
        let binary = meta
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|b| b.get("Binary"))
            .and_then(Value::as_str);
        let bins = binaries(&manifest);
        match binary {
            Some(b) if bins.iter().any(|x| x == b) => {}
            other => problems.push(format!(
                "{name}: BuildProperties.Binary {other:?} is not a binary of {code} ({bins:?})"
            )),
        }
        if get("Runtime").and_then(Value::as_str) != Some("provided.al2023") {
            problems.push(format!("{name}: Runtime is not provided.al2023"));
        }
        if get("Handler").and_then(Value::as_str) != Some("bootstrap") {
            problems.push(format!("{name}: Handler is not bootstrap"));
        }
        let arch: Vec<_> = get("Architectures")
            .map(items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(Value::as_str)
            .collect();
        if arch != ["arm64"] {
            problems.push(format!("{name}: Architectures is not [arm64]"));
        }
        if let Ok(dir) = dir.canonicalize() {
            covered.push(dir);
        }
    }
    for (krate, _) in crates {
        let dir = root()
            .join("functions")
            .join(krate)
            .canonicalize()
            .expect("crate dir");
        if !covered.contains(&dir) {
            problems.push(format!("functions/{krate} has no function resource"));
        }
    }
    problems
}

// ------------------------------------------------------------------ IAM

/// Actions AWS authorizes only against `Resource: "*"`, each with the reason.
const ONLY_STAR: &[(&str, &str)] = &[
    (
        "sns:CreatePlatformApplication",
        "creates the platform application: SNS defines no resource type for it, so the ARN to \
         be created cannot be named in the policy",
    ),
    (
        "dynamodb:ListStreams",
        "the table stream's event source mapping lists the table's streams with events-queue's \
         role: DynamoDB defines no resource type for ListStreams",
    ),
];

/// A resource that names no particular resource: `*`, or an ARN whose resource part is `*`.
fn wildcard_resource(r: &Value) -> bool {
    let s = match intrinsic(r) {
        Some((tag, v)) if tag == "Sub" => v.as_str().or_else(|| v.get(0).and_then(Value::as_str)),
        Some(_) => return false, // !GetAtt X.Arn, !Ref X: one resource
        None => r.as_str(),
    };
    let Some(s) = s else { return false };
    // `${AWS::Region}` and the like hold colons: replace each `${...}` by a placeholder.
    let mut plain = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        plain.push_str(&rest[..i]);
        plain.push('X');
        rest = rest[i..].find('}').map_or("", |j| &rest[i + j + 1..]);
    }
    plain.push_str(rest);
    plain == "*" || plain.splitn(6, ':').nth(5) == Some("*")
}

/// Problems with IAM: Allow statements with a wildcard action (`*`, `svc:*`, `svc:Get*`),
/// `NotAction`/`NotResource`, or a wildcard resource unless every action is in [`ONLY_STAR`].
fn iam_problems(t: &Value) -> Vec<String> {
    let mut problems = vec![];
    for (at, s) in statements(t) {
        if s.is_null() {
            problems.push(format!("{at}: inline SAM policies"));
            continue;
        }
        if s.get("Effect").and_then(Value::as_str) != Some("Allow") {
            continue; // Deny statements only narrow access
        }
        for k in ["NotAction", "NotResource"] {
            if s.get(k).is_some() {
                problems.push(format!("{at}: Allow with {k}"));
            }
        }
        let actions: Vec<&str> = s
            .get("Action")
            .map(items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(Value::as_str)
            .collect();
        if actions.is_empty() {
            problems.push(format!("{at}: no Action"));
        }
        for a in &actions {
            if a.contains('*') || a.contains('?') {
                problems.push(format!("{at}: wildcard action {a}"));
            }
        }
        let resources = s.get("Resource").map(items).unwrap_or_default();
        if resources.is_empty() {
            problems.push(format!("{at}: no Resource"));
        }
        let only_star = actions
            .iter()
            .all(|a| ONLY_STAR.iter().any(|(x, _)| x.eq_ignore_ascii_case(a)));
        for r in resources {
            if wildcard_resource(r) && !only_star {
                problems.push(format!(
                    "{at}: wildcard resource for {actions:?} (name the table, queue, log group, bucket or ARN prefix)"
                ));
            }
        }
    }
    problems
}

// ------------------------------------------------------------------ data and queue

/// Problems with the DynamoDB table: on-demand, TTL on `ttl` (what nearcast-aws writes),
/// PITR, SSE, key schema pk/sk.
fn table_problems(t: &Value) -> Vec<String> {
    let tables = of_type(t, "AWS::DynamoDB::Table");
    if tables.len() != 1 {
        return vec![format!(
            "expected one DynamoDB table, found {}",
            tables.len()
        )];
    }
    let (name, r) = &tables[0];
    let mut problems = vec![];
    if prop(r, &["BillingMode"]).and_then(Value::as_str) != Some("PAY_PER_REQUEST") {
        problems.push(format!("{name}: BillingMode is not PAY_PER_REQUEST"));
    }
    if prop(r, &["TimeToLiveSpecification", "AttributeName"]).and_then(Value::as_str) != Some("ttl")
        || !is_true(prop(r, &["TimeToLiveSpecification", "Enabled"]))
    {
        problems.push(format!("{name}: TTL is not enabled on attribute ttl"));
    }
    if !is_true(prop(
        r,
        &[
            "PointInTimeRecoverySpecification",
            "PointInTimeRecoveryEnabled",
        ],
    )) {
        problems.push(format!("{name}: point-in-time recovery is off"));
    }
    if !is_true(prop(r, &["SSESpecification", "SSEEnabled"])) {
        problems.push(format!("{name}: SSESpecification.SSEEnabled is not true"));
    }
    let keys: Vec<(&str, &str)> = prop(r, &["KeySchema"])
        .map(items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| {
            Some((
                k.get("AttributeName")?.as_str()?,
                k.get("KeyType")?.as_str()?,
            ))
        })
        .collect();
    if keys != [("pk", "HASH"), ("sk", "RANGE")] {
        problems.push(format!(
            "{name}: key schema is {keys:?}, the adapter uses pk/sk"
        ));
    }
    problems
}

fn ref_target(v: &Value) -> Option<String> {
    let (tag, arg) = intrinsic(v)?;
    match tag.as_str() {
        "Ref" => arg.as_str().map(str::to_string),
        "GetAtt" => match arg {
            Value::String(s) => s.split('.').next().map(str::to_string),
            Value::Sequence(s) => s.first()?.as_str().map(str::to_string),
            _ => None,
        },
        _ => None,
    }
}

/// Problems with the events-queue wiring: every SQS event source reports batch item
/// failures and reads a queue of this template whose redrive policy names a DLQ of this
/// template, and the DLQ's depth has an alarm.
fn queue_problems(t: &Value) -> Vec<String> {
    let mut problems = vec![];
    let queues: Vec<(String, &Value)> = of_type(t, "AWS::SQS::Queue");
    let queue = |n: &str| queues.iter().find(|(q, _)| q == n).map(|(_, r)| *r);
    let mut sources = 0;
    for (name, f) in of_type(t, "AWS::Serverless::Function") {
        let events = prop(f, &["Events"]).and_then(Value::as_mapping);
        for (ev, e) in events.into_iter().flatten() {
            if e.get("Type").and_then(Value::as_str) != Some("SQS") {
                continue;
            }
            sources += 1;
            let at = format!("{name}.Events.{}", ev.as_str().unwrap_or("?"));
            let types: Vec<_> = prop(e, &["FunctionResponseTypes"])
                .map(items)
                .unwrap_or_default()
                .into_iter()
                .filter_map(Value::as_str)
                .collect();
            if !types.contains(&"ReportBatchItemFailures") {
                problems.push(format!("{at}: no ReportBatchItemFailures"));
            }
            let Some(q) = prop(e, &["Queue"]).and_then(ref_target) else {
                problems.push(format!("{at}: Queue is not a queue of this template"));
                continue;
            };
            let Some(qr) = queue(&q) else {
                problems.push(format!("{at}: {q} is not an AWS::SQS::Queue"));
                continue;
            };
            let dlq = prop(qr, &["RedrivePolicy", "deadLetterTargetArn"]).and_then(ref_target);
            match dlq {
                Some(d) if queue(&d).is_some() => {
                    let alarmed = of_type(t, "AWS::CloudWatch::Alarm").iter().any(|(_, a)| {
                        prop(a, &["Dimensions"])
                            .map(items)
                            .unwrap_or_default()
                            .iter()
                            .any(|d2| {
                                d2.get("Value").and_then(ref_target).as_deref() == Some(d.as_str())
                            })
                    });
                    if !alarmed {
                        problems.push(format!("{q}: no alarm on the depth of its DLQ {d}"));
                    }
                }
                _ => problems.push(format!("{q}: no RedrivePolicy to a dead-letter queue")),
            }
            let max = prop(qr, &["RedrivePolicy", "maxReceiveCount"]).and_then(Value::as_u64);
            if !matches!(max, Some(1..=10)) {
                problems.push(format!("{q}: maxReceiveCount {max:?} not in 1..=10"));
            }
        }
    }
    if sources == 0 {
        problems.push("no SQS event source".into());
    }
    problems
}

/// Problems with the model bucket: versioned, encrypted, public access blocked.
fn bucket_problems(t: &Value) -> Vec<String> {
    let mut problems = vec![];
    let buckets = of_type(t, "AWS::S3::Bucket");
    if buckets.is_empty() {
        problems.push("no model bucket".into());
    }
    for (name, b) in buckets {
        if prop(b, &["VersioningConfiguration", "Status"]).and_then(Value::as_str)
            != Some("Enabled")
        {
            problems.push(format!("{name}: versioning is not enabled"));
        }
        if prop(
            b,
            &["BucketEncryption", "ServerSideEncryptionConfiguration"],
        )
        .is_none()
        {
            problems.push(format!("{name}: no default encryption"));
        }
        for k in [
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        ] {
            if !is_true(prop(b, &["PublicAccessBlockConfiguration", k])) {
                problems.push(format!(
                    "{name}: PublicAccessBlockConfiguration.{k} is not true"
                ));
            }
        }
    }
    problems
}

/// Problems with the HTTP routes: every route but `/healthz` has a (named, not NONE)
/// authorizer defined on an HTTP API of the template; `/v1/admin/*` routes (and the OpenAPI
/// document) use a different authorizer than the device routes.
fn route_problems(t: &Value) -> Vec<String> {
    let mut problems = vec![];
    let defined: Vec<String> = of_type(t, "AWS::Serverless::HttpApi")
        .iter()
        .filter_map(|(_, api)| prop(api, &["Auth", "Authorizers"])?.as_mapping())
        .flat_map(|m| m.keys().filter_map(Value::as_str).map(str::to_string))
        .collect();
    let mut admin = vec![];
    let mut device = vec![];
    for (name, f) in of_type(t, "AWS::Serverless::Function") {
        for (ev, e) in prop(f, &["Events"])
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            if e.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                continue;
            }
            let path = prop(e, &["Path"]).and_then(Value::as_str).unwrap_or("");
            let auth = prop(e, &["Auth", "Authorizer"]).and_then(Value::as_str);
            let at = format!("{name}.Events.{}", ev.as_str().unwrap_or("?"));
            if path == "/healthz" {
                continue;
            }
            match auth {
                None | Some("NONE") => problems.push(format!("{at}: {path} has no authorizer")),
                Some(a) if !defined.iter().any(|d| d == a) => problems.push(format!(
                    "{at}: authorizer {a} is not defined on the HTTP API"
                )),
                // The API's document is for marketers' tools, behind their sign-in.
                Some(a) if path.starts_with("/v1/admin/") || path == "/v1/openapi.json" => {
                    admin.push(a.to_string())
                }
                Some(a) => device.push(a.to_string()),
            }
        }
    }
    if admin.is_empty() || device.is_empty() {
        problems.push("expected both admin and device routes".into());
    }
    if admin.iter().any(|a| device.contains(a)) {
        problems.push("an authorizer serves both marketers and devices".into());
    }
    problems
}

// ------------------------------------------------------------------ the template

#[test]
fn every_function_crate_has_a_resource_whose_code_and_binary_exist() {
    let crates = function_crates();
    let names: Vec<&str> = crates.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["admin-api", "events-api", "events-queue"]);
    let problems = function_problems(&template(), &root().join("infra"), &crates);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn no_iam_statement_allows_a_wildcard() {
    let t = template();
    assert!(
        statements(&t).len() >= 12,
        "the checker sees the roles' statements"
    );
    let problems = iam_problems(&t);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_table_has_pitr_sse_and_the_adapters_ttl() {
    let problems = table_problems(&template());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_queue_has_a_dead_letter_queue_and_partial_batch_responses() {
    let problems = queue_problems(&template());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_model_bucket_is_versioned_encrypted_and_private() {
    let problems = bucket_problems(&template());
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Managed-CachingDisabled and Managed-AllViewerExceptHostHeader: nothing cached, every
/// viewer header but Host (so the Authorization header) passed on to API Gateway.
const CACHING_DISABLED: &str = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad";
const ALL_VIEWER_EXCEPT_HOST: &str = "b689b0a8-53d0-40ab-baf2-68738e2966ac";

/// Problems with the console's distribution: `/v1/*` must reach the HTTP API uncached with
/// the Authorization header (else every admin call is a 401, or worse, a cached answer
/// served to another marketer); the console's files come only through CloudFront (an
/// origin access control, and a bucket policy that lets no principal but that distribution
/// read them); viewers are sent to HTTPS.
fn console_problems(t: &Value) -> Vec<String> {
    let mut problems = vec![];
    let dists = of_type(t, "AWS::CloudFront::Distribution");
    if dists.is_empty() {
        problems.push("no CloudFront distribution for the console".into());
    }
    for (name, d) in dists {
        let origins = prop(d, &["DistributionConfig", "Origins"])
            .map(items)
            .unwrap_or_default();
        let origin = |id: &str| {
            origins
                .iter()
                .find(|o| o.get("Id").and_then(Value::as_str) == Some(id))
                .copied()
        };
        let behaviours = prop(d, &["DistributionConfig", "CacheBehaviors"])
            .map(items)
            .unwrap_or_default();
        let api = behaviours
            .iter()
            .find(|b| b.get("PathPattern").and_then(Value::as_str) == Some("/v1/*"));
        match api {
            None => problems.push(format!("{name}: no /v1/* behaviour")),
            Some(b) => {
                let target = b
                    .get("TargetOriginId")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let to_api = origin(target)
                    .and_then(|o| o.get("DomainName"))
                    .and_then(|v| intrinsic(v).map(|(_, x)| x).or(Some(v)))
                    .and_then(|v| v.as_str().or_else(|| v.get(0).and_then(Value::as_str)))
                    .is_some_and(|s| s.contains("${HttpApi}"));
                if !to_api {
                    problems.push(format!("{name}: /v1/* does not go to the HTTP API"));
                }
                if b.get("CachePolicyId").and_then(Value::as_str) != Some(CACHING_DISABLED) {
                    problems.push(format!("{name}: /v1/* is cached"));
                }
                if b.get("OriginRequestPolicyId").and_then(Value::as_str)
                    != Some(ALL_VIEWER_EXCEPT_HOST)
                {
                    problems.push(format!(
                        "{name}: /v1/* does not pass the Authorization header on"
                    ));
                }
            }
        }
        let default = prop(d, &["DistributionConfig", "DefaultCacheBehavior"]);
        let https = default
            .and_then(|b| b.get("ViewerProtocolPolicy"))
            .and_then(Value::as_str)
            .is_some_and(|p| p != "allow-all");
        if !https {
            problems.push(format!("{name}: the console is served over plain HTTP"));
        }
        let files = default
            .and_then(|b| b.get("TargetOriginId"))
            .and_then(Value::as_str)
            .and_then(origin);
        if files.and_then(|o| o.get("OriginAccessControlId")).is_none() {
            problems.push(format!(
                "{name}: the console's bucket is read without an origin access control"
            ));
        }
    }
    for (name, p) in of_type(t, "AWS::S3::BucketPolicy") {
        for s in prop(p, &["PolicyDocument", "Statement"])
            .map(items)
            .unwrap_or_default()
        {
            if s.get("Effect").and_then(Value::as_str) != Some("Allow") {
                continue;
            }
            let cloudfront = s
                .get("Principal")
                .and_then(|p| p.get("Service"))
                .and_then(Value::as_str)
                == Some("cloudfront.amazonaws.com");
            let scoped = s
                .get("Condition")
                .and_then(|c| c.get("StringEquals"))
                .and_then(|c| c.get("aws:SourceArn"))
                .is_some();
            if !(cloudfront && scoped) {
                problems.push(format!(
                    "{name}: a bucket read allowed to another principal than one distribution"
                ));
            }
        }
    }
    problems
}

#[test]
fn the_console_is_private_behind_cloudfront_and_the_api_gets_its_authorization_header() {
    let problems = console_problems(&template());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn checker_refuses_a_cached_api_a_public_console_bucket_and_plain_http() {
    let mut t = template();
    let text = serde_yaml_ng::to_string(&t).unwrap();
    assert!(console_problems(&t).is_empty());
    for (from, to, want) in [
        (
            CACHING_DISABLED,
            "658327ea-f89d-4fab-a63d-7e88639e58f6",
            "is cached",
        ),
        (
            ALL_VIEWER_EXCEPT_HOST,
            "88a5eaf4-2fd4-4709-b370-b4c650ea3fcf",
            "Authorization",
        ),
        ("redirect-to-https", "allow-all", "plain HTTP"),
        (
            "cloudfront.amazonaws.com",
            "s3.amazonaws.com",
            "another principal",
        ),
        (
            "PathPattern: /v1/*",
            "PathPattern: /api/*",
            "no /v1/* behaviour",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        t = parse(&text.replacen(from, to, 1));
        let problems = console_problems(&t);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{from} -> {to}: {problems:?}"
        );
    }
}

#[test]
fn marketer_and_device_routes_have_their_own_authorizers() {
    let problems = route_problems(&template());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn events_api_checks_the_jwt_subject() {
    let t = template();
    let f = resources(&t)
        .into_iter()
        .find(|(n, _)| n == "EventsApiFunction")
        .expect("EventsApiFunction")
        .1;
    let mode =
        prop(f, &["Environment", "Variables", "NEARCAST_DEVICE_AUTH"]).and_then(Value::as_str);
    assert_eq!(mode, Some("jwt"));
}

#[test]
fn cfn_lint_finds_no_errors() {
    if std::env::var("NEARCAST_SKIP_CFN_LINT").as_deref() == Ok("1") {
        eprintln!(
            "\n*** SKIPPED: cfn-lint on infra/template.yaml (NEARCAST_SKIP_CFN_LINT=1) ***\n"
        );
        return;
    }
    // The pinned cfn-lint of .venv, installed by `scripts/moto.sh --python` if missing.
    let lint = nearcast_aws::moto::venv_program("cfn-lint").unwrap_or_else(|e| {
        panic!(
            "cfn-lint is not available: {e}\nIt is installed into .venv with moto \
             (`bash scripts/moto.sh --python`); set NEARCAST_SKIP_CFN_LINT=1 to skip this check"
        )
    });
    // Errors fail the run; warnings too (`--non-zero-exit-code warning`): the template has none.
    let out = Command::new(&lint)
        .args(["--non-zero-exit-code", "warning", "--"])
        .arg(template_path())
        .output()
        .expect("cfn-lint runs");
    assert!(
        out.status.success(),
        "cfn-lint: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------ the checkers

const ROLE_HEAD: &str = r#"
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: p
          PolicyDocument:
            Statement:
"#;

fn role(statement: &str) -> Value {
    let body: String = statement
        .lines()
        .map(|l| format!("              {l}\n"))
        .collect();
    parse(&format!("{ROLE_HEAD}{body}"))
}

#[test]
fn checker_refuses_wildcard_actions() {
    for action in [
        "\"*\"",
        "dynamodb:*",
        "dynamodb:Get*",
        "[sqs:ReceiveMessage, \"sns:*\"]",
    ] {
        let t = role(&format!(
            "- Effect: Allow\n  Action: {action}\n  Resource: !GetAtt Table.Arn"
        ));
        let p = iam_problems(&t);
        assert!(
            p.iter().any(|p| p.contains("wildcard action")),
            "{action}: {p:?}"
        );
    }
}

#[test]
fn checker_refuses_wildcard_resources_unless_allow_listed() {
    for resource in [
        "\"*\"",
        "!Sub \"arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:*\"",
        "[!GetAtt Table.Arn, \"*\"]",
    ] {
        let t = role(&format!(
            "- Effect: Allow\n  Action: dynamodb:GetItem\n  Resource: {resource}"
        ));
        let p = iam_problems(&t);
        assert!(
            p.iter().any(|p| p.contains("wildcard resource")),
            "{resource}: {p:?}"
        );
    }
    // Inside an !If branch too.
    let t = role(
        "- !If\n  - C\n  - Effect: Allow\n    Action: sns:Publish\n    Resource: \"*\"\n  - !Ref AWS::NoValue",
    );
    assert_eq!(iam_problems(&t).len(), 1, "{:?}", iam_problems(&t));
    // An allow-listed action on "*" is fine, but not with another action beside it.
    let ok = role("- Effect: Allow\n  Action: sns:CreatePlatformApplication\n  Resource: \"*\"");
    assert_eq!(iam_problems(&ok), Vec::<String>::new());
    let mixed = role(
        "- Effect: Allow\n  Action: [sns:CreatePlatformApplication, sns:Publish]\n  Resource: \"*\"",
    );
    assert_eq!(iam_problems(&mixed).len(), 1);
    // Narrow resources: a table, an ARN prefix, a Deny with wildcards.
    let narrow = role(
        "- Effect: Allow\n  Action: [sns:Publish]\n  Resource: !Sub \"arn:aws:sns:${AWS::Region}:${AWS::AccountId}:endpoint/GCM/app/*\"\n\
         - Effect: Deny\n  Action: \"s3:*\"\n  Resource: \"*\"",
    );
    assert_eq!(iam_problems(&narrow), Vec::<String>::new());
    let not_action =
        role("- Effect: Allow\n  NotAction: s3:DeleteObject\n  Resource: !GetAtt B.Arn");
    assert!(
        iam_problems(&not_action)
            .iter()
            .any(|p| p.contains("NotAction"))
    );
}

#[test]
fn checker_refuses_a_table_without_pitr_sse_or_ttl() {
    let good = r#"
Resources:
  T:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      KeySchema: [{AttributeName: pk, KeyType: HASH}, {AttributeName: sk, KeyType: RANGE}]
      TimeToLiveSpecification: {AttributeName: ttl, Enabled: true}
      PointInTimeRecoverySpecification: {PointInTimeRecoveryEnabled: true}
      SSESpecification: {SSEEnabled: true}
"#;
    assert_eq!(table_problems(&parse(good)), Vec::<String>::new());
    for (from, to, what) in [
        (
            "PointInTimeRecoveryEnabled: true",
            "PointInTimeRecoveryEnabled: false",
            "point-in-time",
        ),
        ("SSEEnabled: true", "SSEEnabled: false", "SSE"),
        ("AttributeName: ttl", "AttributeName: expires", "TTL"),
        ("Enabled: true}", "Enabled: false}", "TTL"),
        ("PAY_PER_REQUEST", "PROVISIONED", "BillingMode"),
    ] {
        let p = table_problems(&parse(&good.replace(from, to)));
        assert!(p.iter().any(|p| p.contains(what)), "{to}: {p:?}");
    }
}

#[test]
fn checker_refuses_a_queue_without_dlq_or_partial_failures() {
    let good = r#"
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Q:
          Type: SQS
          Properties:
            Queue: !GetAtt Q.Arn
            FunctionResponseTypes: [ReportBatchItemFailures]
  Q:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy: {deadLetterTargetArn: !GetAtt D.Arn, maxReceiveCount: 5}
  D:
    Type: AWS::SQS::Queue
  A:
    Type: AWS::CloudWatch::Alarm
    Properties:
      Dimensions: [{Name: QueueName, Value: !GetAtt D.QueueName}]
"#;
    assert_eq!(queue_problems(&parse(good)), Vec::<String>::new());
    for (from, to, what) in [
        ("[ReportBatchItemFailures]", "[]", "ReportBatchItemFailures"),
        (
            "deadLetterTargetArn: !GetAtt D.Arn",
            "deadLetterTargetArn: !GetAtt X.Arn",
            "dead-letter",
        ),
        (
            "Value: !GetAtt D.QueueName",
            "Value: !GetAtt Q.QueueName",
            "alarm",
        ),
        (
            "maxReceiveCount: 5",
            "maxReceiveCount: 0",
            "maxReceiveCount",
        ),
    ] {
        let p = queue_problems(&parse(&good.replace(from, to)));
        assert!(p.iter().any(|p| p.contains(what)), "{to}: {p:?}");
    }
}

#[test]
fn checker_refuses_missing_code_binaries_and_uncovered_crates() {
    let infra = root().join("infra");
    let crates = function_crates();
    let one = |code: &str, binary: &str| {
        parse(&format!(
            r#"
Resources:
  F:
    Type: AWS::Serverless::Function
    Metadata: {{BuildMethod: rust-cargolambda, BuildProperties: {{Binary: {binary}}}}}
    Properties: {{CodeUri: {code}, Runtime: provided.al2023, Handler: bootstrap, Architectures: [arm64]}}
"#
        ))
    };
    let p = function_problems(
        &one("../functions/events-api", "nearcast-events-api"),
        &infra,
        &crates,
    );
    assert!(p.iter().all(|p| !p.contains("events-api")), "{p:?}");
    assert!(
        p.iter()
            .any(|p| p.contains("functions/admin-api has no function resource")),
        "{p:?}"
    );
    let p = function_problems(
        &one("../functions/events-api", "bootstrap"),
        &infra,
        &crates,
    );
    assert!(p.iter().any(|p| p.contains("is not a binary")), "{p:?}");
    let p = function_problems(&one("../functions/nowhere", "x"), &infra, &crates);
    assert!(p.iter().any(|p| p.contains("has no Cargo.toml")), "{p:?}");
}

#[test]
fn checker_refuses_unauthorized_routes_and_a_public_bucket() {
    let routes = r#"
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        Authorizers:
          M: {JwtConfiguration: {issuer: i, audience: [a]}}
          D: {JwtConfiguration: {issuer: i, audience: [a]}}
  F:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        A: {Type: HttpApi, Properties: {Path: "/v1/admin/{proxy+}", Method: ANY, Auth: {Authorizer: M}}}
        E: {Type: HttpApi, Properties: {Path: /v1/events, Method: POST, Auth: {Authorizer: D}}}
"#;
    assert_eq!(route_problems(&parse(routes)), Vec::<String>::new());
    let open = routes.replace("Auth: {Authorizer: D}", "Auth: {Authorizer: NONE}");
    assert!(
        route_problems(&parse(&open))
            .iter()
            .any(|p| p.contains("no authorizer"))
    );
    let shared = routes.replace("Authorizer: D}", "Authorizer: M}");
    assert!(
        route_problems(&parse(&shared))
            .iter()
            .any(|p| p.contains("both"))
    );

    let bucket = r#"
Resources:
  B:
    Type: AWS::S3::Bucket
    Properties:
      VersioningConfiguration: {Status: Suspended}
      PublicAccessBlockConfiguration: {BlockPublicAcls: true}
"#;
    let p = bucket_problems(&parse(bucket));
    assert!(p.iter().any(|p| p.contains("versioning")), "{p:?}");
    assert!(p.iter().any(|p| p.contains("encryption")), "{p:?}");
    assert!(
        p.iter().any(|p| p.contains("RestrictPublicBuckets")),
        "{p:?}"
    );
}

/// The functions' environment variables (functions/README.md): a misspelt name in the
/// template would silently leave a setting at its default.
const KNOWN_VARS: &[&str] = &[
    "NEARCAST_TABLE",
    "NEARCAST_MODEL_PATH",
    "NEARCAST_LOG",
    "NEARCAST_APNS_ARN",
    "NEARCAST_FCM_ARN",
    "NEARCAST_WEATHER_URL",
    "NEARCAST_CATALOG_REFRESH_SECS",
    "NEARCAST_CATALOG_BUCKET",
    "NEARCAST_MODEL_BUCKET",
    "NEARCAST_MODEL_KEY",
    "NEARCAST_CHALLENGER_KEY",
    "NEARCAST_CHALLENGER_SHARE",
    "NEARCAST_DEVICE_AUTH",
    "NEARCAST_ADMIN_AUTH",
    "NEARCAST_ADMIN_ROLE_CLAIM",
    "NEARCAST_CAP_PER_DAY",
    "NEARCAST_CAP_PER_WEEK",
    "NEARCAST_CAP_MIN_GAP_MINUTES",
    "NEARCAST_KEEP_IDEMPOTENCY_DAYS",
    "NEARCAST_KEEP_LOG_DAYS",
    "NEARCAST_WEBHOOK_URL",
    "NEARCAST_WEBHOOK_SECRET",
];

fn unknown_variables(t: &Value) -> Vec<String> {
    let globals = t
        .get("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(|f| f.get("Environment"))
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping);
    let functions = of_type(t, "AWS::Serverless::Function");
    let own = functions
        .iter()
        .filter_map(|(_, f)| prop(f, &["Environment", "Variables"])?.as_mapping());
    globals
        .into_iter()
        .chain(own)
        .flat_map(|m| m.keys().filter_map(Value::as_str))
        .filter(|k| k.starts_with("NEARCAST_") && !KNOWN_VARS.contains(k))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_template_sets_only_known_variables() {
    let t = template();
    assert_eq!(unknown_variables(&t), Vec::<String>::new());
    let typo = parse(
        "Globals: {Function: {Environment: {Variables: {NEARCAST_CAP_PER_DAYS: 3, NEARCAST_LOG: info}}}}",
    );
    assert_eq!(unknown_variables(&typo), ["NEARCAST_CAP_PER_DAYS"]);
}

#[test]
fn the_functions_start_on_the_templates_environment() {
    let t = template();
    let cases: [&[(&str, &str)]; 3] = [
        &[],
        &[("ModelKey", "models/ranker.json")],
        &[
            ("ModelKey", "models/ranker.json"),
            ("ChallengerKey", "models/candidate.json"),
            ("ChallengerShare", "0.2"),
        ],
    ];
    for set in cases {
        let envs = environments(&t, set);
        assert!(
            envs.iter().any(|(_, e)| !e.is_empty()),
            "no environment found"
        );
        for (name, env) in envs {
            // Only the Rust functions read NEARCAST_* variables.
            if !env.iter().any(|(k, _)| k == "NEARCAST_TABLE") {
                continue;
            }
            let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let config = nearcast_functions::Config::from_lookup(lookup);
            assert!(
                config.is_ok(),
                "{name} with {set:?} would fail its cold start: {:?}",
                config.err()
            );
        }
    }
}

// ------------------------------------------------------------------ the Lambda build's key

/// `scripts/lambda-inputs-key.sh` in `dir` with `env` added: the key a Lambda build is
/// recorded under (empty outside a git checkout).
fn lambda_key(dir: &Path, env: &[(&str, &str)]) -> String {
    let script = root().join("scripts/lambda-inputs-key.sh");
    let out = Command::new("bash")
        .arg(script)
        .current_dir(dir)
        .env_remove("RUSTFLAGS")
        .envs(env.iter().copied())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A checked Lambda build is reused only while its key stays the same, so the key must move
/// with every file a function is built from (committed, changed or untracked), with the
/// build script, its tools' pins and cargo's settings, and must not move with docs, the
/// cross-crate tests, benchmarks, CI or other scripts (CI would rebuild the zips for each).
#[test]
fn the_lambda_builds_key_follows_what_the_functions_are_built_from_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(lambda_key(d, &[]), "", "no key outside a git checkout");
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(d)
            .output()
            .expect("git runs")
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    let write = |path: &str, text: &str| {
        let p = d.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "crates/core/src/lib.rs",
        "functions/api/src/main.rs",
        "infra/template.yaml",
        "models/ranker.json",
        "scripts/build-lambdas.sh",
        "scripts/requirements-lambda.txt",
        "scripts/test.sh",
        "docs/guide.md",
        "docs/flow.svg",
        "tests/tests/e2e.rs",
        "bench/load.sh",
        ".ci/run",
        "README.md",
    ] {
        write(path, "v1\n");
    }
    write(".gitignore", "/target\n");
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "v1"]);
    let base = lambda_key(d, &[]);
    assert_eq!(base.len(), 32, "{base}");
    assert_eq!(lambda_key(d, &[]), base, "the same tree, the same key");

    // Each of these changes what a function is built from: a new key, and the old one back
    // once undone.
    for path in [
        "Cargo.lock",
        "crates/core/src/lib.rs",
        "functions/api/src/main.rs",
        "infra/template.yaml",
        "models/ranker.json",
        "scripts/build-lambdas.sh",
        "scripts/requirements-lambda.txt",
        "crates/core/src/new.rs",
        ".cargo/config.toml",
    ] {
        let before = std::fs::read_to_string(d.join(path)).ok();
        write(path, "v2\n");
        assert_ne!(lambda_key(d, &[]), base, "{path} changed, uncommitted");
        match before {
            Some(text) => write(path, &text),
            None => std::fs::remove_file(d.join(path)).unwrap(),
        }
        assert_eq!(lambda_key(d, &[]), base, "{path} as it was");
    }
    assert_ne!(lambda_key(d, &[("RUSTFLAGS", "-Ctarget-cpu=native")]), base);
    assert_ne!(
        lambda_key(d, &[("CARGO_PROFILE_RELEASE_LTO", "false")]),
        base
    );

    // These do not: the same key.
    for path in [
        "scripts/test.sh",
        "docs/guide.md",
        "docs/flow.svg",
        "tests/tests/e2e.rs",
        "bench/load.sh",
        ".ci/run",
        "README.md",
        "crates/core/NOTES.md",
        "target/release/junk",
    ] {
        write(path, "v2\n");
    }
    assert_eq!(
        lambda_key(d, &[]),
        base,
        "docs, tests, benchmarks, CI, ignored files"
    );
    // Committing a change to a source moves the key as the uncommitted change did.
    write("crates/core/src/lib.rs", "v2\n");
    let changed = lambda_key(d, &[]);
    git(&["commit", "-q", "-am", "v2"]);
    assert_eq!(lambda_key(d, &[]), changed);
    assert_ne!(changed, base);
}
