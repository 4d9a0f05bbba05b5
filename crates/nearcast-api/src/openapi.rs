//! The OpenAPI 3.1 document of the whole HTTP API (`GET /v1/openapi.json`), generated from
//! the `#[utoipa::path]` annotation on each handler. The router is built from the same
//! annotations ([`crate::routes`]: utoipa-axum registers each handler under the method and
//! path it documents), so a route cannot exist without its description or the other way
//! round. What every operation may answer besides its success (the errors of
//! [`crate::error::ApiError`], each naming its field) and who may call it (the admin
//! routes' bearer key and role) are added here, once, from the same rules the router
//! applies.
//!
//! Bodies are described as JSON values: their fields, ranges and refusals are in
//! docs/formats.md, the one place they are kept.

use crate::auth::{Role, required_role};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, Ref,
    RefOr, Response as OaResponse, ResponseBuilder, Schema, Type,
};

/// The document's frame: title, version, the error schema and the admin key scheme.
pub(crate) fn base() -> OpenApi {
    let detail = ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::String))
        .required("code")
        .property("reason", ObjectBuilder::new().schema_type(Type::String))
        .required("reason")
        .property(
            "field",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The field at fault, e.g. `events[2].lat`")),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    let error = ObjectBuilder::new()
        .property("error", detail)
        .required("error")
        .description(Some(
            "Every refusal: a code, a reason and the field it names",
        ));
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Nearcast")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Geo-contextual push offers: device events, and the admin API of marketers \
                     and data scientists. Field reference: docs/formats.md.",
                ))
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .schema("Error", Schema::Object(error.build()))
                .security_scheme(
                    "admin_key",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some(
                                "An API key (embedded host) or a JWT of the marketer user pool \
                                 (AWS); open on a loopback host without keys",
                            ))
                            .build(),
                    ),
                )
                .build(),
        ))
        .build()
}

/// The errors any operation may answer, with what they mean.
const ERRORS: [(&str, &str); 8] = [
    (
        "400",
        "Bad input: the `field` says which; nothing was changed",
    ),
    ("401", "No or an unknown key (admin routes)"),
    ("403", "The key's role may not do this"),
    ("404", "Not found"),
    ("409", "Conflicts with the current state"),
    ("413", "The body is over the limit"),
    ("422", "A model artifact was refused"),
    ("503", "Unavailable: retry; nothing was half-written"),
];

fn error_response(description: &str) -> RefOr<OaResponse> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            )
            .build(),
    )
}

/// The finished document: [`crate::routes`]' annotations, each operation with the errors
/// it may answer and, on admin routes, the key it needs and the role (in its description).
pub fn document() -> OpenApi {
    let (_, mut doc) = crate::routes();
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops: [(Method, &mut Option<Operation>); 4] = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            for (code, what) in ERRORS {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| error_response(what));
            }
            if let Some(role) = required_role(&method, path) {
                op.security = Some(vec![SecurityRequirement::new(
                    "admin_key",
                    Vec::<String>::new(),
                )]);
                let role = match role {
                    Role::Viewer => "viewer",
                    Role::Editor => "editor",
                    Role::Admin => "admin",
                };
                let note = format!("Needs the role `{role}` or higher.");
                op.description = Some(match op.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
                    _ => note,
                });
            }
        }
    }
    doc
}

/// `GET /v1/openapi.json`: the document, made once.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "service",
    responses((status = 200, description = "This document", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn serve() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| document().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}
