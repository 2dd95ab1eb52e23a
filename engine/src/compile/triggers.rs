//! Checks of `schedule:` and `on:`: cron expressions and zones, catch-up settings, event
//! matchers, and the parameters they give runs.

use super::context::Ctx;
use crate::spec::{Catchup, Pipeline};
use crate::syntax::push_pointer;
use crate::template;
use crate::trigger::cron::{CronError, CronSchedule};

/// The most missed slots `catchup: all` may run.
pub const MAX_CATCHUP: u32 = 10_000;

pub(super) fn check(spec: &Pipeline, cx: &mut Ctx) {
    if let Some(s) = &spec.schedule {
        match CronSchedule::parse(&s.cron, s.timezone.as_deref()) {
            Ok(_) => {}
            Err(CronError::Zone(e)) => cx.at("/schedule/timezone", e),
            Err(CronError::Expression(e)) => cx.at("/schedule/cron", e),
        }
        match s.catchup_limit {
            Some(_) if s.catchup != Catchup::All => {
                cx.at("/schedule/catchup_limit", "`catchup_limit` only applies with `catchup: all`".into())
            }
            Some(n) if n == 0 || n > MAX_CATCHUP => {
                cx.at("/schedule/catchup_limit", format!("`catchup_limit` must be 1 to {MAX_CATCHUP}"))
            }
            _ => {}
        }
        for (name, value) in &s.params {
            let pp = push_pointer("/schedule/params", name);
            match spec.params.get(name) {
                None => cx.at_key(
                    &pp,
                    format!("the schedule gives `{name}`, which is not a parameter of this pipeline"),
                ),
                Some(p) => {
                    if let Err(why) = p.kind.coerce(value) {
                        cx.at(&pp, format!("the schedule's value of `{name}`: {why}"));
                    }
                }
            }
        }
        for (name, p) in &spec.params {
            if p.default.is_none() && !s.params.contains_key(name) {
                cx.at(
                    "/schedule",
                    format!("scheduled runs need a value of the required parameter `{name}`: give it in `schedule.params` or a default"),
                );
            }
        }
    }
    for (i, m) in spec.monitor.iter().enumerate() {
        let at = format!("/monitor/{i}");
        if let Err(e) = crate::registry::check_model_name(&m.model) {
            cx.at(&format!("{at}/model"), e);
        }
        if let Some(a) = &m.alias
            && let Err(e) = crate::registry::check_alias(a)
        {
            cx.at(&format!("{at}/alias"), e);
        }
        if m.window.is_some_and(|w| !(20..=crate::spec::MAX_WINDOW as u32).contains(&w)) {
            cx.at(
                &format!("{at}/window"),
                format!(
                    "`window` must be 20 to {} rows (what serving keeps per version)",
                    crate::spec::MAX_WINDOW
                ),
            );
        }
        if m.interval.is_some_and(|d| {
            d.0 < std::time::Duration::from_secs(1) || d.0 > std::time::Duration::from_secs(86_400)
        }) {
            cx.at(&format!("{at}/interval"), "`interval` must be 1s to 1 day".into());
        }
        if m.cooldown.is_some_and(|d| d.0 > std::time::Duration::from_secs(30 * 86_400)) {
            cx.at(&format!("{at}/cooldown"), "`cooldown` is at most 30 days".into());
        }
        if m.threshold.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
            cx.at(&format!("{at}/threshold"), "`threshold` must be a number above 0".into());
        }
        if m.drift_share.is_some_and(|s| !(s > 0.0 && s <= 1.0)) {
            cx.at(&format!("{at}/drift_share"), "`drift_share` must be in (0, 1]".into());
        }
        if let Some(url) = &m.alertmanager
            && (!url.starts_with("http://") || url.parse::<hyper::Uri>().is_err())
        {
            cx.at(
                &format!("{at}/alertmanager"),
                format!("`{url}` is not an http:// URL (https is not supported yet)"),
            );
        }
    }
    for (i, t) in spec.on.iter().enumerate() {
        let tp = format!("/on/{i}");
        let kinds = [t.alert.is_some(), t.webhook.is_some(), t.rollout.is_some(), t.drift.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            cx.at(
                &tp,
                "each entry of `on:` has exactly one of `alert`, `webhook`, `rollout` or `drift`".into(),
            );
        }
        if let Some(m) = t.rollout.as_ref().map(|r| &r.model).or(t.drift.as_ref().map(|d| &d.model))
            && let Err(e) = crate::registry::check_model_name(m)
        {
            let what = if t.rollout.is_some() { "rollout" } else { "drift" };
            cx.at(&format!("{tp}/{what}/model"), e);
        }
        match (&t.alert, &t.webhook) {
            (Some(_), Some(_)) | (None, None) => {}
            (Some(a), None) => {
                if a.name.trim().is_empty() {
                    cx.at(&format!("{tp}/alert/name"), "the alert's `name` is empty".into());
                }
            }
            (None, Some(w)) => {
                if !valid_source(&w.source) {
                    cx.at(
                        &format!("{tp}/webhook/source"),
                        format!(
                            "webhook source `{}` must be 1-64 letters, digits, `-`, `_` or `.`",
                            w.source
                        ),
                    );
                } else if w.source.starts_with("sluice.") {
                    cx.at(
                        &format!("{tp}/webhook/source"),
                        "sources named `sluice.*` are Sluice's own events: match them with `rollout:` or `drift:`".into(),
                    );
                } else if w.source == "alertmanager" {
                    cx.at(
                        &format!("{tp}/webhook/source"),
                        "the source `alertmanager` is Alertmanager's; match its alerts with `alert:`".into(),
                    );
                }
            }
        }
        for (name, text) in &t.params {
            let pp = push_pointer(&format!("{tp}/params"), name);
            if !spec.params.contains_key(name) {
                cx.at_key(&pp, format!("`on:` gives `{name}`, which is not a parameter of this pipeline"));
            }
            let env = template::environment();
            if let Err(e) = env.template_from_str(text) {
                cx.at(
                    &pp,
                    format!("the template of `{name}` does not parse: {}", template::describe(e, text)),
                );
            } else {
                for unknown in template::unknown_names(env, text, false) {
                    cx.at(&pp, format!("the template of `{name}`: {unknown}"));
                }
            }
        }
    }
}

/// Whether `s` can name a webhook source in a URL.
pub fn valid_source(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}
