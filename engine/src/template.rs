//! Jinja templating (minijinja) shared by the compiler, which checks references, and the
//! driver, which renders commands, env, `when:` and `map:` at run time.
//!
//! Templates see `params`, `steps.<id>.outputs`, `run.id`, `run.name` and, in a mapped step,
//! `item`. Undefined values are errors, never silently empty strings.

use minijinja::{Environment, UndefinedBehavior, Value};

static ENVIRONMENT: std::sync::LazyLock<Environment<'static>> = std::sync::LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
});

/// The shared environment: strict undefined handling, no HTML escaping.
pub fn environment() -> &'static Environment<'static> {
    &ENVIRONMENT
}

/// Whether a string holds template syntax (plain strings skip templating entirely).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The expression inside `{{ ... }}`, or the text itself when it is not wrapped.
pub fn expression_text(s: &str) -> &str {
    let t = s.trim();
    match t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        Some(inner) if !inner.contains("{{") => inner.trim(),
        _ => t,
    }
}

/// The variables a template (or an expression) reads, as dotted paths (`steps.a.outputs.y`).
pub fn references(env: &Environment<'static>, text: &str, expression: bool) -> Result<Vec<String>, String> {
    let vars = if expression {
        let expr = expression_text(text);
        env.compile_expression(expr).map_err(|e| describe(e, expr))?.undeclared_variables(true)
    } else {
        env.template_from_str(text).map_err(|e| describe(e, text))?.undeclared_variables(true)
    };
    let mut vars: Vec<String> = vars.into_iter().collect();
    vars.sort();
    Ok(vars)
}

/// Renders a template string against a context.
pub fn render(env: &Environment<'static>, text: &str, ctx: &Value) -> Result<String, String> {
    if !is_template(text) {
        return Ok(text.to_string());
    }
    env.render_str(text, ctx).map_err(|e| describe(e, text))
}

/// Evaluates an expression (`params.x > 1`, `{{ steps.a.outputs.files }}`) against a context.
pub fn evaluate(env: &Environment<'static>, text: &str, ctx: &Value) -> Result<Value, String> {
    let expr = expression_text(text);
    env.compile_expression(expr).map_err(|e| describe(e, expr))?.eval(ctx).map_err(|e| describe(e, expr))
}

/// A template error as one sentence naming the part of the template at fault.
pub fn describe(e: minijinja::Error, source: &str) -> String {
    let mut msg = e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string());
    let part = e.range().and_then(|r| source.get(r)).filter(|p| !p.trim().is_empty());
    match part {
        Some(part) if e.kind() != minijinja::ErrorKind::SyntaxError => {
            msg.push_str(&format!(" in `{}`", part.trim()))
        }
        _ => {
            if let Some(line) = e.line() {
                msg.push_str(&format!(" (template line {line})"));
            }
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_references() {
        let env = environment();
        let refs =
            references(env, "run {{ steps.a.outputs.y }} {{ params.n | int }} {{ item }}", false).unwrap();
        assert_eq!(refs, vec!["item", "params.n", "steps.a.outputs.y"]);
        let refs = references(env, "{{ steps.b.outputs.files }}", true).unwrap();
        assert_eq!(refs, vec!["steps.b.outputs.files"]);
        assert!(references(env, "{{ oops", false).is_err());
    }

    #[test]
    fn renders_and_evaluates_strictly() {
        let env = environment();
        let ctx = Value::from_serialize(serde_json::json!({"params": {"n": 2, "xs": [1, 2]}}));
        assert_eq!(render(env, "n={{ params.n }}", &ctx).unwrap(), "n=2");
        assert!(render(env, "{{ params.missing }}", &ctx).is_err());
        assert!(evaluate(env, "params.n > 1", &ctx).unwrap().is_true());
        assert_eq!(evaluate(env, "{{ params.xs }}", &ctx).unwrap().len(), Some(2));
    }
}
