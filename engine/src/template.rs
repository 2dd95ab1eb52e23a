//! Jinja templating (minijinja) shared by the compiler, which checks references, and the
//! driver, which renders commands, env, `when:` and `map:` at run time.
//!
//! Templates see `params`, `steps.<id>.outputs`, `run.id`, `run.name` and, in a mapped step,
//! `item`. Undefined values are errors, never silently empty strings.
//!
//! Values are data, not code: in a shell script ([`shell_environment`]) every `{{ value }}` is
//! written as one shell word, quoted (shlex's POSIX quoting) unless it needs none, so that a
//! parameter, an event field or an upstream output holding `$(...)` or `; rm` reaches the
//! command as text. The `raw` filter (`{{ params.flags | raw }}`) is the explicit way to
//! insert a value unquoted.

use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value};

/// Settings every environment shares: strict undefined handling, the `raw` filter.
fn base() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("raw", |v: Value| Value::from_object(Raw(v.to_string())));
    env
}

/// A value the author asked to insert unquoted (`| raw`). Its own type, not minijinja's
/// "safe" strings: those mean HTML-safe, and filters such as `tojson` return them, which must
/// not make a value shell code.
#[derive(Debug)]
struct Raw(String);

impl minijinja::value::Object for Raw {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Plain
    }
    fn render(self: &std::sync::Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

static ENVIRONMENT: std::sync::LazyLock<Environment<'static>> = std::sync::LazyLock::new(|| {
    let mut env = base();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env
});

static SHELL: std::sync::LazyLock<Environment<'static>> = std::sync::LazyLock::new(|| {
    let mut env = base();
    env.set_auto_escape_callback(|_| AutoEscape::Custom("shell"));
    env.set_formatter(shell_formatter);
    env
});

/// The shared environment: strict undefined handling, no escaping.
pub fn environment() -> &'static Environment<'static> {
    &ENVIRONMENT
}

/// The environment for shell scripts: every value written is quoted as one shell word.
pub fn shell_environment() -> &'static Environment<'static> {
    &SHELL
}

fn shell_formatter(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    let text = value.to_string();
    let written = if value.downcast_object_ref::<Raw>().is_some() {
        out.write_str(&text)
    } else {
        let quoted = shlex::try_quote(&text).map_err(|_| {
            Error::new(ErrorKind::InvalidOperation, "the value holds a NUL byte, which no shell word can")
        })?;
        out.write_str(&quoted)
    };
    written.map_err(|e| Error::new(ErrorKind::WriteFailure, "cannot write the script").with_source(e))
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

/// The filters and tests a template (or an expression) names that do not exist, each as a
/// message (`unknown filter \`bogus\``): minijinja resolves them only when it renders, which
/// would make a typo fail the run instead of `validate`.
pub fn unknown_names(env: &Environment<'static>, text: &str, expression: bool) -> Vec<String> {
    use minijinja::machinery::{Token, WhitespaceConfig, tokenize};
    let source = if expression { expression_text(text) } else { text };
    // `Default::default()` rather than `SyntaxConfig::default()`: without minijinja's
    // `custom_syntax` feature the config is a unit struct, and clippy objects to that spelling.
    let tokens: Vec<Token> = tokenize(source, expression, Default::default(), WhitespaceConfig::default())
        .map_while(Result::ok)
        .map(|(t, _)| t)
        .collect();
    let mut out = Vec::new();
    let mut check = |name: &str, filter: bool| {
        if !exists(env, name, filter) {
            let what = if filter { "filter" } else { "test" };
            let message = format!("unknown {what} `{name}`");
            if !out.contains(&message) {
                out.push(message);
            }
        }
    };
    for (i, token) in tokens.iter().enumerate() {
        match (token, tokens.get(i + 1), tokens.get(i + 2)) {
            (Token::Pipe, Some(Token::Ident(name)), _) => check(name, true),
            (Token::BlockStart, Some(Token::Ident("filter")), Some(Token::Ident(name))) => check(name, true),
            (Token::Ident("is"), Some(Token::Ident("not")), Some(Token::Ident(name))) => check(name, false),
            (Token::Ident("is"), Some(Token::Ident(name)), _) if *name != "not" => check(name, false),
            _ => {}
        }
    }
    out
}

/// Whether `env` has a filter (or a test) of that name: asked by applying it to `none`, where
/// only an unknown name gives an unknown-filter (unknown-test) error. Answers are kept.
fn exists(env: &Environment<'static>, name: &str, filter: bool) -> bool {
    static KNOWN: std::sync::Mutex<Option<std::collections::HashMap<(String, bool), bool>>> =
        std::sync::Mutex::new(None);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let known = known.get_or_insert_with(Default::default);
    if let Some(&answer) = known.get(&(name.to_string(), filter)) {
        return answer;
    }
    let (probe, unknown) = if filter {
        (format!("{{{{ none | {name} }}}}"), ErrorKind::UnknownFilter)
    } else {
        (format!("{{{{ none is {name} }}}}"), ErrorKind::UnknownTest)
    };
    let answer = !matches!(env.render_str(&probe, ()), Err(e) if e.kind() == unknown);
    known.insert((name.to_string(), filter), answer);
    answer
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
    fn unknown_filters_and_tests_are_named() {
        let env = environment();
        assert_eq!(
            unknown_names(env, "{{ params.x | uper }} {{ params.y | round(2) }}", false),
            vec!["unknown filter `uper`"]
        );
        assert_eq!(
            unknown_names(env, "params.x is odd and params.y is not evn", true),
            vec!["unknown test `evn`"]
        );
        assert_eq!(
            unknown_names(env, "{% filter shout %}x{% endfilter %}", false),
            vec!["unknown filter `shout`"]
        );
        assert!(
            unknown_names(
                env,
                "{{ a | raw }} {{ b | default('x') | join(',') }} {% if c is defined %}{% endif %}",
                false
            )
            .is_empty()
        );
        assert!(unknown_names(env, "{{ 'a|b' }}", false).is_empty(), "a pipe inside a string is text");
    }

    #[test]
    fn shell_scripts_get_values_as_single_words() {
        let env = shell_environment();
        let ctx = Value::from_serialize(serde_json::json!({"params": {
            "s": "$(touch /tmp/pwned)", "after": "x; touch /tmp/pwned #", "n": 3, "path": "/data/a-b_c.csv",
            "q": "it's", "flags": "-v --fast", "empty": ""
        }}));
        assert_eq!(render(env, "echo {{ params.s }}", &ctx).unwrap(), "echo '$(touch /tmp/pwned)'");
        assert_eq!(
            render(env, "git checkout {{ params.after }}", &ctx).unwrap(),
            "git checkout 'x; touch /tmp/pwned #'"
        );
        assert_eq!(
            render(env, "head -n {{ params.n }} {{ params.path }}", &ctx).unwrap(),
            "head -n 3 /data/a-b_c.csv"
        );
        assert_eq!(render(env, "echo {{ params.q }}", &ctx).unwrap(), r#"echo "it's""#);
        assert_eq!(render(env, "echo {{ params.empty }}", &ctx).unwrap(), "echo ''");
        assert_eq!(render(env, "tool {{ params.flags | raw }}", &ctx).unwrap(), "tool -v --fast");
        // HTML-safe strings (what `safe` and `tojson` give) are still quoted.
        assert_eq!(
            render(env, "echo {{ params.s | tojson }}", &ctx).unwrap(),
            r#"echo '"$(touch /tmp/pwned)"'"#
        );
        assert_eq!(render(env, "echo {{ params.s | safe }}", &ctx).unwrap(), "echo '$(touch /tmp/pwned)'");
        // Template text itself is the author's code, and is not quoted.
        assert_eq!(render(env, "{% if params.n > 1 %}a && b{% endif %}", &ctx).unwrap(), "a && b");
        // The same filters elsewhere: `raw` changes nothing where nothing is quoted.
        assert_eq!(
            render(environment(), "{{ params.flags | raw }} {{ params.s }}", &ctx).unwrap(),
            "-v --fast $(touch /tmp/pwned)"
        );
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
