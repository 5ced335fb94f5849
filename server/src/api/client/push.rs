//! /_matrix/client/v3/pushrules/: read and change the user's push rules.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::push::{
    delete_pushrule::v3 as delete_v3, get_pushrule::v3 as get_rule_v3,
    get_pushrule_actions::v3 as get_actions_v3, get_pushrule_enabled::v3 as get_enabled_v3,
    get_pushrules_all::v3 as get_all_v3, get_pushrules_global_scope::v3 as get_global_v3,
    set_pushrule::v3 as set_rule_v3, set_pushrule_actions::v3 as set_actions_v3,
    set_pushrule_enabled::v3 as set_enabled_v3,
};
use ruma::push::{AnyPushRuleRef, InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset};

use crate::api::ruma::{Ruma, RumaResponse};
use crate::error::{Error, ErrorCode, Result};
use crate::service::Services;

fn rule_not_found(rule_id: &str) -> Error {
    Error::not_found(format!("There is no push rule {rule_id:?} of that kind"))
}

fn find<'a>(ruleset: &'a Ruleset, kind: &RuleKind, rule_id: &str) -> Result<AnyPushRuleRef<'a>> {
    ruleset.get(kind.clone(), rule_id).ok_or_else(|| rule_not_found(rule_id))
}

pub async fn get_all(
    State(services): State<Arc<Services>>,
    request: Ruma<get_all_v3::Request>,
) -> Result<RumaResponse<get_all_v3::Response>> {
    let sender = request.sender()?;
    Ok(get_all_v3::Response::new(services.push_rules.get(&sender.user_id)?).into())
}

pub async fn get_global(
    State(services): State<Arc<Services>>,
    request: Ruma<get_global_v3::Request>,
) -> Result<RumaResponse<get_global_v3::Response>> {
    let sender = request.sender()?;
    Ok(get_global_v3::Response::new(services.push_rules.get(&sender.user_id)?).into())
}

pub async fn get_rule(
    State(services): State<Arc<Services>>,
    request: Ruma<get_rule_v3::Request>,
) -> Result<RumaResponse<get_rule_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let ruleset = services.push_rules.get(&sender.user_id)?;
    let rule = find(&ruleset, &body.kind, &body.rule_id)?;
    Ok(get_rule_v3::Response::new(rule.into()).into())
}

pub async fn set_rule(
    State(services): State<Arc<Services>>,
    request: Ruma<set_rule_v3::Request>,
) -> Result<RumaResponse<set_rule_v3::Response>> {
    let user_id = request.sender()?.user_id.clone();
    let body = request.body;
    services.push_rules.update(&user_id, |ruleset| {
        ruleset.insert(body.rule, body.after.as_deref(), body.before.as_deref()).map_err(|error| {
            match error {
                InsertPushRuleError::UnknownRuleId => Error::new(
                    ErrorCode::Unknown,
                    "The rule named in `before` or `after` does not exist",
                ),
                other => Error::bad_json(format!("The push rule cannot be stored: {other}")),
            }
        })
    })?;
    Ok(set_rule_v3::Response::new().into())
}

pub async fn delete_rule(
    State(services): State<Arc<Services>>,
    request: Ruma<delete_v3::Request>,
) -> Result<RumaResponse<delete_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    services.push_rules.update(&sender.user_id, |ruleset| {
        ruleset.remove(body.kind.clone(), &body.rule_id).map_err(|error| match error {
            RemovePushRuleError::ServerDefault => Error::not_found(
                "Server-default push rules cannot be deleted; disable them instead",
            ),
            _ => rule_not_found(&body.rule_id),
        })
    })?;
    Ok(delete_v3::Response::new().into())
}

pub async fn get_enabled(
    State(services): State<Arc<Services>>,
    request: Ruma<get_enabled_v3::Request>,
) -> Result<RumaResponse<get_enabled_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let ruleset = services.push_rules.get(&sender.user_id)?;
    let rule = find(&ruleset, &body.kind, &body.rule_id)?;
    Ok(get_enabled_v3::Response::new(rule.enabled()).into())
}

pub async fn set_enabled(
    State(services): State<Arc<Services>>,
    request: Ruma<set_enabled_v3::Request>,
) -> Result<RumaResponse<set_enabled_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    services.push_rules.update(&sender.user_id, |ruleset| {
        ruleset
            .set_enabled(body.kind.clone(), &body.rule_id, body.enabled)
            .map_err(|_| rule_not_found(&body.rule_id))
    })?;
    Ok(set_enabled_v3::Response::new().into())
}

pub async fn get_actions(
    State(services): State<Arc<Services>>,
    request: Ruma<get_actions_v3::Request>,
) -> Result<RumaResponse<get_actions_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    let ruleset = services.push_rules.get(&sender.user_id)?;
    let rule = find(&ruleset, &body.kind, &body.rule_id)?;
    Ok(get_actions_v3::Response::new(rule.actions().to_vec()).into())
}

pub async fn set_actions(
    State(services): State<Arc<Services>>,
    request: Ruma<set_actions_v3::Request>,
) -> Result<RumaResponse<set_actions_v3::Response>> {
    let sender = request.sender()?;
    let body = &request.body;
    services.push_rules.update(&sender.user_id, |ruleset| {
        ruleset
            .set_actions(body.kind.clone(), &body.rule_id, body.actions.clone())
            .map_err(|_| rule_not_found(&body.rule_id))
    })?;
    Ok(set_actions_v3::Response::new().into())
}
