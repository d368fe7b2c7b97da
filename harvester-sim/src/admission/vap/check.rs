//! The creation-time check of a policy's CEL, as kube-apiserver compiles it
//! (k8s.io/apiserver `pkg/admission/plugin/cel/compile.go` `CompileCELExpression`, v0.33.0:
//! `env.Compile` parses and type-checks against the declared variables and the function
//! library of the environment's Kubernetes version, then the result type must be one of the
//! expression's return types). cel-go's checker is not ported: this walks the parsed
//! expression with the declared variables, the library of [`super::functions`] and the types
//! of [`super::types`], and reports what cel-go reports, in its words:
//! - `undeclared reference to 'x' (in container '')` for an unknown variable or a function the
//!   environment does not have (cel-go `checker/errors.go` `undeclaredReference`);
//! - `undefined field 'f'` on a typed object (`undefinedField`);
//! - `found no matching overload for 'f' applied to '(a, b)'` for an operator or a checked
//!   receiver whose argument types cannot match (`noMatchingOverload`);
//! - `type 'string' does not support field selection` (`typeDoesNotSupportFieldSelection`).
//!
//! Each as `ERROR: <input>:LINE:COL: message` with the source line and a caret, as cel-go's
//! `Issues.String()`; the column is where the simulator's parser puts the expression, which
//! can differ from cel-go's by a few characters.

use cel::common::ast::{operators as op, EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::Program;

use super::functions::{self, Ret};
use super::types::Ty;

/// The variables an expression may use and the Kubernetes minor of its environment.
#[derive(Debug, Clone, Default)]
pub struct Decls {
    /// The Kubernetes minor whose CEL environment compiles it (the cluster's minor − 1).
    pub env_minor: u32,
    /// Declared variables and their types.
    pub vars: Vec<(String, Ty)>,
}

impl Decls {
    /// Declares `name`.
    pub fn with(mut self, name: &str, ty: Ty) -> Self {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_string(), ty));
        self
    }
}

struct Checker<'a> {
    decls: &'a Decls,
    scope: Vec<(String, Ty)>,
    program: &'a Program,
    source: &'a str,
    errors: Vec<String>,
}

/// Type-checks a parsed expression: its type, or cel-go's issues text.
pub fn check(program: &Program, source: &str, decls: &Decls) -> Result<Ty, String> {
    let mut c = Checker {
        decls,
        scope: Vec::new(),
        program,
        source,
        errors: Vec::new(),
    };
    let t = c.expr(program.expression());
    if c.errors.is_empty() {
        Ok(t)
    } else {
        Err(c.errors.join("\n"))
    }
}

fn literal(l: &LiteralValue) -> Ty {
    match l {
        LiteralValue::Boolean(_) => Ty::Bool,
        LiteralValue::Bytes(_) => Ty::Bytes,
        LiteralValue::Double(_) => Ty::Double,
        LiteralValue::Int(_) => Ty::Int,
        LiteralValue::Null => Ty::Null,
        LiteralValue::String(_) => Ty::String,
        LiteralValue::UInt(_) => Ty::Uint,
    }
}

impl Checker<'_> {
    fn error(&mut self, id: u64, msg: String) {
        let start = self
            .program
            .source_info()
            .offset_for(id)
            .map(|(s, _)| s as usize)
            .unwrap_or(0)
            .min(self.source.len());
        let before = &self.source[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        let text = self.source.lines().nth(line - 1).unwrap_or("");
        self.errors.push(format!(
            "ERROR: <input>:{line}:{col}: {msg}\n | {text}\n | {}^",
            ".".repeat(col - 1)
        ));
    }

    fn lookup(&self, name: &str) -> Option<Ty> {
        self.scope
            .iter()
            .rev()
            .chain(self.decls.vars.iter().rev())
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }

    fn expr(&mut self, e: &IdedExpr) -> Ty {
        match &e.expr {
            Expr::Literal(l) => literal(l),
            Expr::Ident(name) => match self.lookup(name) {
                Some(t) => t,
                None => {
                    self.error(
                        e.id,
                        format!("undeclared reference to '{name}' (in container '')"),
                    );
                    Ty::Dyn
                }
            },
            Expr::Select(s) => {
                let operand = self.expr(&s.operand);
                let t = self.select(e.id, &operand, &s.field);
                if s.test {
                    Ty::Bool
                } else {
                    t
                }
            }
            Expr::List(l) => {
                let mut elem: Option<Ty> = None;
                for x in &l.elements {
                    let t = self.expr(x);
                    elem = Some(match elem {
                        None => t,
                        Some(prev) => prev.join(&t).unwrap_or(Ty::Dyn),
                    });
                }
                Ty::list(elem.unwrap_or(Ty::Dyn))
            }
            Expr::Map(m) => {
                let (mut k, mut v): (Option<Ty>, Option<Ty>) = (None, None);
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        let kt = self.expr(&me.key);
                        let vt = self.expr(&me.value);
                        k = Some(k.map_or(kt.clone(), |p| p.join(&kt).unwrap_or(Ty::Dyn)));
                        v = Some(v.map_or(vt.clone(), |p| p.join(&vt).unwrap_or(Ty::Dyn)));
                    }
                }
                Ty::map(k.unwrap_or(Ty::Dyn), v.unwrap_or(Ty::Dyn))
            }
            Expr::Comprehension(c) => {
                let range = self.expr(&c.iter_range);
                let (first, second) = match &range {
                    Ty::List(t) => (Ty::Int, (**t).clone()),
                    Ty::Map(k, v) => ((**k).clone(), (**v).clone()),
                    Ty::Dyn => (Ty::Dyn, Ty::Dyn),
                    other => {
                        let msg = format!(
                            "expression of type '{}' cannot be range of a comprehension (must be list, map, or dynamic)",
                            other.name()
                        );
                        self.error(c.iter_range.id, msg);
                        (Ty::Dyn, Ty::Dyn)
                    }
                };
                let iter_ty = match (&range, &c.iter_var2) {
                    (Ty::List(_), None) => second.clone(),
                    _ => first,
                };
                let accu = self.expr(&c.accu_init);
                let depth = self.scope.len();
                self.scope.push((c.iter_var.clone(), iter_ty));
                if let Some(v2) = &c.iter_var2 {
                    self.scope.push((v2.clone(), second));
                }
                self.scope.push((c.accu_var.clone(), accu.clone()));
                self.expr(&c.loop_cond);
                let step = self.expr(&c.loop_step);
                // The accumulator takes the step's type where the init was an empty list.
                if let Some(joined) = accu.join(&step) {
                    if let Some(last) = self.scope.last_mut() {
                        last.1 = joined;
                    }
                }
                let result = self.expr(&c.result);
                self.scope.truncate(depth);
                result
            }
            Expr::Call(call) => self.call(e.id, call),
            Expr::Struct(_) | Expr::Unspecified => Ty::Dyn,
        }
    }

    fn select(&mut self, id: u64, operand: &Ty, field: &str) -> Ty {
        match operand {
            Ty::Dyn => Ty::Dyn,
            Ty::Map(k, v) if k.accepts(&Ty::String) => (**v).clone(),
            Ty::Object(o) => match o.fields.iter().find(|(n, _)| n == field) {
                Some((_, t)) => t.clone(),
                None if o.fields.is_empty() => Ty::Dyn,
                None => {
                    self.error(id, format!("undefined field '{field}'"));
                    Ty::Dyn
                }
            },
            other => {
                let msg = format!("type '{}' does not support field selection", other.name());
                self.error(id, msg);
                Ty::Dyn
            }
        }
    }

    fn no_overload(&mut self, id: u64, name: &str, target: Option<&Ty>, args: &[Ty]) -> Ty {
        let list = args.iter().map(Ty::name).collect::<Vec<_>>().join(", ");
        let applied = match target {
            Some(t) => format!("{}.({list})", t.name()),
            None => format!("({list})"),
        };
        self.error(
            id,
            format!("found no matching overload for '{name}' applied to '{applied}'"),
        );
        Ty::Dyn
    }

    fn call(&mut self, id: u64, call: &cel::common::ast::CallExpr) -> Ty {
        let name = call.func_name.as_str();
        // `strings.quote(x)`, `sets.contains(a, b)`: a namespaced global function.
        if let Some(Expr::Ident(ns)) = call.target.as_deref().map(|t| &t.expr) {
            if functions::is_namespace(ns) && self.lookup(ns).is_none() {
                let args: Vec<Ty> = call.args.iter().map(|a| self.expr(a)).collect();
                let qualified = format!("{ns}.{name}");
                return self.function(id, &qualified, None, &args);
            }
        }
        let target = call.target.as_deref().map(|t| self.expr(t));
        let args: Vec<Ty> = call.args.iter().map(|a| self.expr(a)).collect();
        match (name, args.as_slice()) {
            (op::LOGICAL_AND | op::LOGICAL_OR, [a, b]) => {
                if !Ty::Bool.accepts(a) || !Ty::Bool.accepts(b) {
                    return self.no_overload(id, name, None, &args);
                }
                Ty::Bool
            }
            (op::LOGICAL_NOT | op::NOT_STRICTLY_FALSE, [a]) => {
                if !Ty::Bool.accepts(a) {
                    return self.no_overload(id, name, None, &args);
                }
                Ty::Bool
            }
            (op::CONDITIONAL, [c, a, b]) => {
                if !Ty::Bool.accepts(c) {
                    return self.no_overload(id, name, None, &args);
                }
                match a.join(b) {
                    Some(t) => t,
                    None => self.no_overload(id, name, None, &args),
                }
            }
            (op::EQUALS | op::NOT_EQUALS, [a, b]) => {
                if a.join(b).is_none() {
                    return self.no_overload(id, name, None, &args);
                }
                Ty::Bool
            }
            (op::LESS | op::LESS_EQUALS | op::GREATER | op::GREATER_EQUALS, [a, b]) => {
                // Cross-type numeric comparisons are on from the 1.28 environment.
                let ok = a.is_dyn()
                    || b.is_dyn()
                    || (a.is_number() && b.is_number())
                    || (a == b
                        && matches!(
                            a,
                            Ty::String | Ty::Bytes | Ty::Bool | Ty::Timestamp | Ty::Duration
                        ));
                if !ok {
                    return self.no_overload(id, name, None, &args);
                }
                Ty::Bool
            }
            (op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO, [a, b]) => {
                self.arithmetic(id, name, a, b)
            }
            (op::NEGATE, [a]) => match a {
                Ty::Int | Ty::Double | Ty::Dyn => a.clone(),
                _ => self.no_overload(id, name, None, &args),
            },
            (op::INDEX, [c, i]) => match c {
                Ty::Dyn => Ty::Dyn,
                Ty::List(t) if matches!(i, Ty::Int | Ty::Uint | Ty::Dyn) => (**t).clone(),
                Ty::Map(k, v) if k.accepts(i) => (**v).clone(),
                _ => self.no_overload(id, name, None, &args),
            },
            // `@in` is (A, list(A)) and (A, map(A, B)): the element must join the item type.
            (op::IN, [e, c]) => match c {
                Ty::Dyn => Ty::Bool,
                Ty::List(t) | Ty::Map(t, _) if e.join(t).is_some() => Ty::Bool,
                _ => self.no_overload(id, name, None, &args),
            },
            _ => self.function(id, name, target.as_ref(), &args),
        }
    }

    fn arithmetic(&mut self, id: u64, name: &str, a: &Ty, b: &Ty) -> Ty {
        let args = [a.clone(), b.clone()];
        let concrete = match (a, b) {
            (Ty::Dyn, Ty::Dyn) => return Ty::Dyn,
            (Ty::Dyn, t) | (t, Ty::Dyn) => t.clone(),
            (x, y) => {
                let ok = match name {
                    op::ADD => {
                        x == y
                            && matches!(
                                x,
                                Ty::Int
                                    | Ty::Uint
                                    | Ty::Double
                                    | Ty::String
                                    | Ty::Bytes
                                    | Ty::Duration
                            )
                            || matches!((x, y), (Ty::List(_), Ty::List(_)))
                            || matches!(
                                (x, y),
                                (Ty::Timestamp, Ty::Duration) | (Ty::Duration, Ty::Timestamp)
                            )
                    }
                    op::SUBSTRACT => {
                        x == y && matches!(x, Ty::Int | Ty::Uint | Ty::Double | Ty::Duration)
                            || matches!((x, y), (Ty::Timestamp, Ty::Duration | Ty::Timestamp))
                    }
                    op::MODULO => x == y && matches!(x, Ty::Int | Ty::Uint),
                    _ => x == y && x.is_number(),
                };
                if !ok {
                    return self.no_overload(id, name, None, &args);
                }
                return match (name, x, y) {
                    (_, Ty::List(p), Ty::List(q)) => Ty::list(p.join(q).unwrap_or(Ty::Dyn)),
                    (op::SUBSTRACT, Ty::Timestamp, Ty::Timestamp) => Ty::Duration,
                    (_, Ty::Duration, Ty::Timestamp) => Ty::Timestamp,
                    _ => x.clone(),
                };
            }
        };
        // One side dyn: the overloads of the other side's type decide.
        match (name, &concrete) {
            (_, Ty::Int | Ty::Uint | Ty::Double) => concrete,
            (op::ADD, Ty::String | Ty::Bytes | Ty::List(_)) => concrete,
            (op::ADD | op::SUBSTRACT, Ty::Duration | Ty::Timestamp) => Ty::Dyn,
            _ => self.no_overload(id, name, None, &args),
        }
    }

    fn function(&mut self, id: u64, name: &str, target: Option<&Ty>, args: &[Ty]) -> Ty {
        // Calls on `authorizer` and on what it returns are not typed further.
        if let Some(Ty::Object(o)) = target {
            if o.fields.is_empty() {
                return Ty::Dyn;
            }
        }
        // Two-variable comprehensions arrive as 3-argument calls of the macro names.
        if matches!(name, "all" | "exists" | "exists_one") && args.len() == 3 {
            return if self.decls.env_minor >= 32 {
                Ty::Bool
            } else {
                self.error(
                    id,
                    format!("undeclared reference to '{name}' (in container '')"),
                );
                Ty::Dyn
            };
        }
        let Some(ret) = functions::lookup(name, self.decls.env_minor) else {
            self.error(
                id,
                format!("undeclared reference to '{name}' (in container '')"),
            );
            return Ty::Dyn;
        };
        if let (Some(t), Some(accepts)) = (target, functions::receiver(name)) {
            if !accepts(t) {
                return self.no_overload(id, name, Some(t), args);
            }
        }
        if !functions::arguments_accepted(name, target, args) {
            return self.no_overload(id, name, target, args);
        }
        match (name, ret) {
            // `indexOf`, `min`, ... on a list: the element type where known.
            ("min" | "max" | "sum", Ret::Dyn) => match target {
                Some(Ty::List(t)) => (**t).clone(),
                _ => Ty::Dyn,
            },
            _ => ret.ty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::vap::types;

    fn run(src: &str, env_minor: u32) -> Result<Ty, String> {
        let decls = Decls {
            env_minor,
            vars: vec![
                ("object".into(), Ty::Dyn),
                ("oldObject".into(), Ty::Dyn),
                ("request".into(), types::request()),
            ],
        };
        let program = cel::Env::stdlib().compile(src).map_err(|e| e.to_string())?;
        check(&program, src, &decls)
    }

    #[test]
    fn types_of_what_the_chart_writes() {
        assert_eq!(run("request.userInfo.username == 'x'", 29), Ok(Ty::Bool));
        assert_eq!(
            run("has(request.userInfo.extra) && 'k' in request.userInfo.extra ? request.userInfo.extra['k'][0] : ''", 29),
            Ok(Ty::String)
        );
        assert_eq!(
            run(
                "object.metadata.finalizers.all(f, f in oldObject.metadata.finalizers)",
                29
            ),
            Ok(Ty::Bool)
        );
        assert_eq!(
            run(
                "'x: ' + oldObject.metadata.finalizers.filter(f, f != 'a').join(', ')",
                29
            ),
            Ok(Ty::String)
        );
        assert_eq!(run("object.spec", 29), Ok(Ty::Dyn));
        assert_eq!(run("1 + 1", 29), Ok(Ty::Int));
    }

    #[test]
    fn what_cel_go_refuses() {
        let e = run("'%s'.format([1])", 28).unwrap_err();
        assert!(e.starts_with("ERROR: <input>:1:"), "{e}");
        assert!(
            e.contains("undeclared reference to 'format' (in container '')"),
            "{e}"
        );
        assert_eq!(run("'%s'.format([1])", 29), Ok(Ty::String));
        assert!(run("strings.quote('a')", 28)
            .unwrap_err()
            .contains("undeclared reference to 'strings.quote'"));
        assert!(run("isIP('1.2.3.4')", 29).is_err());
        assert_eq!(run("isIP('1.2.3.4')", 30), Ok(Ty::Bool));
        assert!(run("nosuch(1)", 35)
            .unwrap_err()
            .contains("undeclared reference to 'nosuch' (in container '')"));
        assert!(run("objekt.x == 1", 35)
            .unwrap_err()
            .contains("undeclared reference to 'objekt' (in container '')"));
        assert!(run("request.operations == 'x'", 35)
            .unwrap_err()
            .contains("undefined field 'operations'"));
        assert!(run("'a' + 1 == 'b'", 35)
            .unwrap_err()
            .contains("found no matching overload for '_+_' applied to '(string, int)'"));
        assert!(run("1 in ['a']", 35)
            .unwrap_err()
            .contains("found no matching overload for '@in' applied to '(int, list(string))'"));
        assert_eq!(run("request.operation in ['CREATE']", 35), Ok(Ty::Bool));
        // Arguments of the standard functions with one kind of argument.
        assert!(run("size(1) == 1", 35)
            .unwrap_err()
            .contains("found no matching overload for 'size' applied to '(int)'"));
        assert!(run("'a'.startsWith(1)", 35)
            .unwrap_err()
            .contains("found no matching overload for 'startsWith' applied to 'string.(int)'"));
        assert_eq!(
            run("size(object.x) == 1 && 'ab'.contains('a')", 35),
            Ok(Ty::Bool)
        );
        assert_eq!(run("object.x.startsWith(object.y)", 35), Ok(Ty::Bool));
        assert!(run("request.operation.x", 35)
            .unwrap_err()
            .contains("type 'string' does not support field selection"));
        assert!(run("[1, 2].join(',')", 35)
            .unwrap_err()
            .contains("found no matching overload for 'join' applied to 'list(int).(string)'"));
    }
}
