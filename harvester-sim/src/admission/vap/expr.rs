//! CEL for admission policies: the environment, JSON in, evaluation with the apiserver's
//! error wording.
//!
//! The environment is CEL's standard library with its macros (`has`, `all`, `exists`,
//! `exists_one`, `map`, `filter`) plus the strings extension (`split`, `join`, `trim`,
//! `lowerAscii`, ...), which Kubernetes adds to every CEL environment
//! (k8s.io/apiserver `pkg/cel/environment/base.go`, v0.33.0: `ext.Strings`). The Kubernetes
//! libraries beyond that (`isSorted`, `url`, `quantity`, `authorizer`, ...) are not
//! implemented: an expression that calls them fails to evaluate, which the policy's
//! failurePolicy then decides (Fail by default), so the simulator is never more lenient.
//!
//! Objects go in as the apiserver hands unstructured JSON to CEL: maps, lists, strings,
//! `int` for integral numbers, `double` otherwise, `null`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::{Context, Env, Program, Value as Cel};
use serde_json::Value;

/// The shared environment (standard library, macros, strings extension).
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Cannot fail on a fresh stdlib environment; a failure leaves the extension out and
        // expressions that use it fail to evaluate (fail closed).
        let _ = env.add_extension(cel::extensions::strings);
        Arc::new(env)
    })
    .clone()
}

/// A compiled expression with its source (for messages).
pub struct Expression {
    source: String,
    program: Program,
}

impl Expression {
    /// Compiles `source`; the error is the apiserver's compile-error wording.
    pub fn compile(source: &str) -> Result<Self, String> {
        env()
            .compile(source)
            .map(|program| Expression {
                source: source.to_string(),
                program,
            })
            .map_err(|e| format!("compilation failed: ERROR: <input>: {e}"))
    }

    /// The parsed program (for [`super::check`]).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `vars`; an error reads as the apiserver's
    /// `expression '<src>' resulted in error: <err>` (k8s.io/apiserver
    /// `pkg/admission/plugin/cel/condition.go` ForInput, v0.33.0).
    pub fn eval(&self, vars: &Activation) -> Result<Cel, String> {
        let mut ctx = Context::with_env(env());
        for (name, value) in &vars.0 {
            ctx.add_variable_from_value(name.clone(), value.clone());
        }
        self.program
            .execute(&ctx)
            .map_err(|e| format!("expression '{}' resulted in error: {e}", self.source.trim()))
    }

    /// Evaluates to a bool; any other result is an error.
    pub fn eval_bool(&self, vars: &Activation) -> Result<bool, String> {
        match self.eval(vars)? {
            Cel::Bool(b) => Ok(b),
            other => Err(format!(
                "expression '{}' resulted in error: no such overload: expected a bool, got {other:?}",
                self.source.trim()
            )),
        }
    }
}

/// The variables an expression sees (`object`, `oldObject`, `request`, `params`,
/// `namespaceObject`, `variables`).
#[derive(Default, Clone)]
pub struct Activation(Vec<(String, Cel)>);

impl Activation {
    /// Binds `name` to a JSON value.
    pub fn bind(&mut self, name: &str, value: &Value) {
        self.bind_cel(name, to_cel(value));
    }

    /// Binds `name` to a CEL value (replacing an earlier binding).
    pub fn bind_cel(&mut self, name: &str, value: Cel) {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_string(), value));
    }
}

/// A JSON value as CEL sees unstructured data.
pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<String, Cel> = m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            Cel::from(map)
        }
    }
}

/// A CEL string result, if it is one.
pub fn as_string(v: &Cel) -> Option<String> {
    match v {
        Cel::String(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, object: Value) -> Result<bool, String> {
        let mut a = Activation::default();
        a.bind("object", &object);
        Expression::compile(src)?.eval_bool(&a)
    }

    #[test]
    fn has_guards_missing_fields_and_in_tests_map_keys() {
        let o = json!({"metadata": {"labels": {"kubevirt.io/nodeName": "n1"}}});
        assert_eq!(
            run("has(object.metadata.deletionTimestamp)", o.clone()),
            Ok(false)
        );
        assert_eq!(
            run("'kubevirt.io/nodeName' in object.metadata.labels && object.metadata.labels['kubevirt.io/nodeName'] == 'n1'", o.clone()),
            Ok(true)
        );
        // An unguarded missing field is an evaluation error, not false.
        let e = run("object.metadata.deletionTimestamp == ''", o);
        assert!(
            e.as_ref().is_err_and(|m| m.starts_with(
                "expression 'object.metadata.deletionTimestamp == ''' resulted in error: "
            )),
            "{e:?}"
        );
    }

    #[test]
    fn macros_strings_and_numbers() {
        let o = json!({"f": ["a", "b"], "n": 3, "s": "x,y"});
        assert_eq!(
            run(
                "object.f.all(x, x in object.s.split(',') || x == 'a')",
                o.clone()
            ),
            Ok(false)
        );
        assert_eq!(
            run("object.f.exists(x, x == 'b') && object.n == 3", o.clone()),
            Ok(true)
        );
        assert_eq!(
            run("object.s.split(',') == ['x', 'y']", o.clone()),
            Ok(true)
        );
        assert_eq!(
            run("object.f == ['a', 'b'] && {'k': 1} == {'k': 1}", o.clone()),
            Ok(true)
        );
        assert!(run("object.n", o.clone()).is_err());
        assert!(Expression::compile("object.(").is_err());
    }
}
