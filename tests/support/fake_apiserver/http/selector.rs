//! Label and field selectors of lists and watches, parsed and matched as apimachinery's `labels.Parse`
//! and `fields.ParseSelector` do (with their error messages, which the API server answers as 400s).

use serde_json::Value;

use super::super::resource::Resource;
use super::super::validate::{label_key_error, label_value_error};

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// A parsed `fieldSelector`: every term must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<FieldTerm>);

#[derive(Clone, Debug, PartialEq)]
struct FieldTerm {
    field: String,
    equal: bool,
    value: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Identifier(String),
    DoesNotExist,
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    OpenPar,
    ClosedPar,
    Comma,
    Greater,
    Less,
    End,
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Parses a label selector (`a=b,c in (d,e),!f`); an error is apimachinery's message.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let tokens = lex(text);
        let mut parser = Parser { tokens, at: 0 };
        let mut requirements = Vec::new();
        loop {
            match parser.peek() {
                Token::Identifier(_) | Token::DoesNotExist => {
                    let requirement = parser
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    match parser.next() {
                        Token::End => break,
                        Token::Comma => {
                            if !matches!(parser.peek(), Token::Identifier(_) | Token::DoesNotExist)
                            {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    literal(parser.peek())
                                ));
                            }
                        }
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                literal(&other)
                            ))
                        }
                    }
                }
                Token::End => break,
                other => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        literal(other)
                    ))
                }
            }
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object with these `metadata.labels` is selected.
    pub fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|requirement| {
            let value = labels.get(&requirement.key).and_then(Value::as_str);
            match &requirement.op {
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::In(values) => value.is_some_and(|v| values.iter().any(|x| x == v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.iter().any(|x| x == v)),
                Op::Gt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.at).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        self.at += 1;
        token
    }

    /// A token read where a value is expected: `in` and `notin` are plain identifiers there.
    fn next_value(&mut self) -> Token {
        match self.next() {
            Token::In => Token::Identifier("in".to_owned()),
            Token::NotIn => Token::Identifier("notin".to_owned()),
            other => other,
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut negated = false;
        let mut token = self.next_value();
        if token == Token::DoesNotExist {
            negated = true;
            token = self.next_value();
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", literal(&token)));
        };
        if let Some(why) = label_key_error(&key) {
            return Err(format!("key: Invalid value: {key:?}: {why}"));
        }
        if negated {
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(Requirement {
                key,
                op: Op::Exists,
            });
        }
        let operator = self.next();
        let op = match operator {
            Token::In | Token::NotIn => {
                let values = self.values()?;
                if operator == Token::In {
                    Op::In(values)
                } else {
                    Op::NotIn(values)
                }
            }
            Token::Equals | Token::DoubleEquals => Op::In(vec![self.exact_value()?]),
            Token::NotEquals => Op::NotIn(vec![self.exact_value()?]),
            Token::Greater | Token::Less => {
                let value = self.exact_value()?;
                let n: i64 = value.parse().map_err(|_| {
                    format!(
                        "values[0]: Invalid value: {value:?}: for 'Gt', 'Lt' operators, the value must be \
                         an integer"
                    )
                })?;
                if operator == Token::Greater {
                    Op::Gt(n)
                } else {
                    Op::Lt(n)
                }
            }
            other => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    literal(&other)
                ))
            }
        };
        for value in match &op {
            Op::In(values) | Op::NotIn(values) => values.as_slice(),
            _ => &[],
        } {
            if let Some(why) = label_value_error(value) {
                return Err(format!("values[0][{key}]: Invalid value: {value:?}: {why}"));
            }
        }
        Ok(Requirement { key, op })
    }

    fn values(&mut self) -> Result<Vec<String>, String> {
        let open = self.next();
        if open != Token::OpenPar {
            return Err(format!("found '{}' expected: '('", literal(&open)));
        }
        let mut values = Vec::new();
        match self.peek() {
            Token::ClosedPar => {
                self.next();
                return Ok(vec![String::new()]);
            }
            Token::Identifier(_) | Token::Comma | Token::In | Token::NotIn => {}
            other => {
                return Err(format!(
                    "found '{}', expected: ',', ')' or identifier",
                    literal(other)
                ))
            }
        }
        let mut last_was_value = false;
        loop {
            match self.next_value() {
                Token::Identifier(value) => {
                    values.push(value);
                    last_was_value = true;
                }
                Token::Comma => {
                    if !last_was_value {
                        values.push(String::new());
                    }
                    last_was_value = false;
                }
                Token::ClosedPar => {
                    if !last_was_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                other => return Err(format!("found '{}', expected: ')'", literal(&other))),
            }
        }
    }

    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        match self.next_value() {
            Token::Identifier(value) => Ok(value),
            other => Err(format!("found '{}', expected: identifier", literal(&other))),
        }
    }
}

fn lex(text: &str) -> Vec<Token> {
    let special = |c: char| matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<');
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if special(c) {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let (token, len) = match two.as_str() {
                "==" => (Token::DoubleEquals, 2),
                "!=" => (Token::NotEquals, 2),
                _ => (
                    match c {
                        '=' => Token::Equals,
                        '!' => Token::DoesNotExist,
                        '(' => Token::OpenPar,
                        ')' => Token::ClosedPar,
                        ',' => Token::Comma,
                        '>' => Token::Greater,
                        _ => Token::Less,
                    },
                    1,
                ),
            };
            tokens.push(token);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier(word),
        });
    }
    tokens
}

fn literal(token: &Token) -> String {
    match token {
        Token::Identifier(word) => word.clone(),
        Token::DoesNotExist => "!".to_owned(),
        Token::Equals => "=".to_owned(),
        Token::DoubleEquals => "==".to_owned(),
        Token::NotEquals => "!=".to_owned(),
        Token::In => "in".to_owned(),
        Token::NotIn => "notin".to_owned(),
        Token::OpenPar => "(".to_owned(),
        Token::ClosedPar => ")".to_owned(),
        Token::Comma => ",".to_owned(),
        Token::Greater => ">".to_owned(),
        Token::Less => "<".to_owned(),
        Token::End => String::new(),
    }
}

// === impl FieldSelector ===

impl FieldSelector {
    /// Parses a field selector (`metadata.name=x,metadata.namespace!=y`) for `resource`; an error is the
    /// API server's message.
    pub fn parse(text: &str, resource: Resource) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in text.split(',').filter(|term| !term.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            if !selectable_fields(resource).contains(&field) {
                return Err(match resource {
                    Resource::Leases | Resource::ConfigMaps => format!(
                        "\"{field}\" is not a known field selector: only \"metadata.name\", \
                         \"metadata.namespace\""
                    ),
                    Resource::CoreEvents | Resource::Events => {
                        format!("field label not supported: {field}")
                    }
                });
            }
            terms.push(FieldTerm {
                field: field.to_owned(),
                equal,
                value: value.to_owned(),
            });
        }
        Ok(FieldSelector(terms))
    }

    /// The one name the selector requires (`metadata.name=X`), as the RBAC authorizer and the watch
    /// cache read it.
    pub fn exact_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|term| term.equal && term.field == "metadata.name")
            .map(|term| term.value.as_str())
    }

    /// Whether `object` of `resource` is selected.
    pub fn matches(&self, resource: Resource, object: &Value) -> bool {
        self.0.iter().all(|term| {
            let actual = field_value(resource, object, &term.field);
            (actual == term.value) == term.equal
        })
    }
}

fn selectable_fields(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Leases | Resource::ConfigMaps => &["metadata.name", "metadata.namespace"],
        Resource::CoreEvents | Resource::Events => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    }
}

/// The value of a selectable field (events' under their core names, as the registry exposes them).
fn field_value(resource: Resource, object: &Value, field: &str) -> String {
    let events_api = resource == Resource::Events;
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match field.split_once('.') {
        Some(("metadata", name)) => text(&format!("/metadata/{name}")),
        Some(("involvedObject", name)) => {
            let base = if events_api {
                "regarding"
            } else {
                "involvedObject"
            };
            text(&format!("/{base}/{name}"))
        }
        _ => match field {
            "reportingComponent" if events_api => text("/reportingController"),
            "source" => {
                let base = if events_api {
                    "deprecatedSource"
                } else {
                    "source"
                };
                let component = text(&format!("/{base}/component"));
                if component.is_empty() {
                    text(if events_api {
                        "/reportingController"
                    } else {
                        "/reportingComponent"
                    })
                } else {
                    component
                }
            }
            other => text(&format!("/{other}")),
        },
    }
}
