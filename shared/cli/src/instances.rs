//! `start`, `status`, `history`, `signal`, `cancel`: one instance at a time.

use crate::{Failure, json_arg, not_found, print};
use reanimate_aws::StackClient;
use reanimate_core::{InstanceId, InstanceRecord, MessageId};
use serde_json::{Value, json};

/// A short, increasing tag for ids the CLI makes up.
fn now_tag() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{millis:x}")
}

async fn load(stack: &StackClient, instance: &str) -> Result<InstanceRecord, Failure> {
    stack
        .load(&InstanceId::new(instance)?)
        .await?
        .ok_or_else(|| not_found(format!("no instance {instance}")))
}

pub(crate) async fn start(
    stack: &StackClient,
    json_mode: bool,
    atom: &str,
    input: &str,
    id: Option<String>,
) -> Result<(), Failure> {
    let input = json_arg(input)?;
    let id = id.unwrap_or_else(|| format!("{atom}-{}", now_tag()));
    stack.start(atom, &id, input).await?;
    print(json_mode, &json!({"instance": id, "atom": atom}), || {
        format!("started {atom} {id}")
    });
    Ok(())
}

pub(crate) async fn status(
    stack: &StackClient,
    json_mode: bool,
    instance: &str,
) -> Result<(), Failure> {
    let r = load(stack, instance).await?;
    let w = &r.waiting;
    let value = json!({
        "instance": r.id.as_str(), "atom": r.atom, "status": r.status.as_str(),
        "version": r.version, "transitions": r.transitions,
        "parent": r.parent.as_ref().map(|p| p.id.as_str()),
        "waiting": {
            "children": w.children.iter().map(|(id, c)| json!({"id": id.as_str(), "atom": c.atom, "tag": c.tag})).collect::<Vec<_>>(),
            "timers": w.timers.iter().map(|(name, t)| json!({"name": name, "due": t.due.to_string()})).collect::<Vec<_>>(),
            "requests": w.requests.iter().map(|(id, q)| json!({"id": id.as_str(), "kind": q.kind})).collect::<Vec<_>>(),
            "calls": w.calls.values().map(|c| json!({"activity": c.activity, "tag": c.tag})).collect::<Vec<_>>(),
        },
        "state": serde_json::from_str::<Value>(&r.state).unwrap_or(Value::Null),
        "result": r.result, "error": r.error,
        "updated_at": r.updated_at.to_string(),
    });
    print(json_mode, &value, || {
        let mut out = format!(
            "{} ({}) is {}, version {}, {} transitions, updated {}",
            r.id,
            r.atom,
            r.status.as_str(),
            r.version,
            r.transitions,
            r.updated_at
        );
        for (id, c) in &w.children {
            out += &format!("\n  waits for child {id} ({}, tag {})", c.atom, c.tag);
        }
        for (name, t) in &w.timers {
            out += &format!("\n  waits for timer {name} at {}", t.due);
        }
        for (id, q) in &w.requests {
            out += &format!("\n  waits for the user: {id} ({})", q.kind);
        }
        for c in w.calls.values() {
            out += &format!("\n  waits for activity {} ({})", c.activity, c.tag);
        }
        if let Some(result) = &r.result {
            out += &format!("\n  result: {result}");
        }
        if let Some(error) = &r.error {
            out += &format!("\n  error: {error}");
        }
        out
    });
    Ok(())
}

pub(crate) async fn history(
    stack: &StackClient,
    json_mode: bool,
    instance: &str,
) -> Result<(), Failure> {
    let r = load(stack, instance).await?;
    // The full history, from the history table; the record keeps only its latest entries.
    let history = stack.history_of(&r).await?;
    let value =
        json!({"instance": r.id.as_str(), "transitions": r.transitions, "history": history});
    print(json_mode, &value, || {
        let mut out = String::new();
        for h in &history {
            out += &format!(
                "v{:<4} {}  {:<18} {:<28} → {:<10} {} effects\n",
                h.version,
                h.at,
                h.event,
                h.detail,
                h.status.as_str(),
                h.effects
            );
        }
        out.trim_end().to_string()
    });
    Ok(())
}

pub(crate) async fn signal(
    stack: &StackClient,
    json_mode: bool,
    instance: &str,
    name: &str,
    payload: &str,
) -> Result<(), Failure> {
    let r = load(stack, instance).await?;
    let payload = json_arg(payload)?;
    let message = MessageId::new(format!("signal:{instance}:{name}:{}", now_tag()))?;
    stack.signal(&r.id, &r.atom, name, payload, message).await?;
    print(
        json_mode,
        &json!({"instance": instance, "signal": name}),
        || format!("sent {name} to {instance}"),
    );
    Ok(())
}

pub(crate) async fn cancel(
    stack: &StackClient,
    json_mode: bool,
    instance: &str,
    reason: &str,
) -> Result<(), Failure> {
    let r = load(stack, instance).await?;
    stack.cancel(&r.id, &r.atom, reason).await?;
    print(
        json_mode,
        &json!({"instance": instance, "cancel": reason}),
        || format!("asked {instance} to cancel"),
    );
    Ok(())
}
