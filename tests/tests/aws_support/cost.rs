//! What DynamoDB bills for the requests a [`Proxy`] recorded: item sizes and capacity units
//! by DynamoDB's rules, on a copy of the table's items ([`Shadow`]) that the recorded
//! requests are applied to in order, so that each write is sized by the item it writes or
//! replaces and each read by the item it returns.
//!
//! The rules (DynamoDB developer guide, "Item sizes and formats" and "DynamoDB on-demand
//! capacity mode"):
//!
//! - An item's size is the sum over its attributes of the name's UTF-8 length plus the
//!   value's size: S its UTF-8 length; N about one byte per two significant digits plus
//!   one; B its bytes; BOOL and NULL 1; M and L 3 bytes plus their contents plus 1 byte per
//!   element; SS, NS and BS the sum of their elements.
//! - Reads: GetItem 1 read request unit (RRU) per 4 KB of the item when strongly
//!   consistent, half that when eventually consistent (a missing item still costs the
//!   minimum); Query and Scan the same over the total size of the items they read;
//!   BatchGetItem per item; TransactGetItems twice a strongly consistent read.
//! - Writes: PutItem, UpdateItem and DeleteItem 1 write request unit (WRU) per 1 KB of the
//!   larger of the item before and after (1 at least); BatchWriteItem per item;
//!   TransactWriteItems 2 WRU per KB for each of its items, ConditionCheck included.
//!
//! Approximations: every request is taken to have succeeded (a write whose condition
//! failed is billed like one that succeeded; the tests that use this check that none
//! failed). Update expressions are applied for SET (values, `if_not_exists`,
//! `list_append`, `+`, `-`), REMOVE, ADD and DELETE on top-level attributes; an update
//! of a nested path leaves the copy unchanged. Query and Scan ignore the 1 MB page limit
//! and filter expressions (a filter does not reduce what is billed anyway), and read the
//! sort key condition forms `begins_with`, `BETWEEN` and the comparisons.

use super::Proxy;
use base64::Engine as _;
use nearcast_aws::aws_sdk_dynamodb::Client;
use nearcast_aws::aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

/// An item, or a key, in DynamoDB's JSON form (`{"pk": {"S": "..."}, ...}`).
pub type Item = Map<String, Value>;

/// Bytes of a number: one per two significant digits (leading and trailing zeros
/// trimmed), plus one.
pub fn number_size(n: &str) -> u64 {
    let mantissa = n.split(['e', 'E']).next().unwrap_or("");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len() as u64;
    significant.div_ceil(2) + 1
}

fn binary_size(b: &Value) -> u64 {
    let text = b.as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_or(text.len(), |bytes| bytes.len()) as u64
}

/// Bytes of one attribute value (without its name).
pub fn value_size(v: &Value) -> u64 {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    let strings = |f: fn(&Value) -> u64| -> u64 {
        inner
            .as_array()
            .map_or(0, |elements| elements.iter().map(f).sum())
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len) as u64,
        "N" => number_size(inner.as_str().unwrap_or("")),
        "B" => binary_size(inner),
        "BOOL" | "NULL" => 1,
        "SS" => strings(|s| s.as_str().map_or(0, str::len) as u64),
        "NS" => strings(|s| number_size(s.as_str().unwrap_or(""))),
        "BS" => strings(binary_size),
        "M" => inner.as_object().map_or(3, |m| {
            3 + m
                .iter()
                .map(|(name, v)| name.len() as u64 + value_size(v) + 1)
                .sum::<u64>()
        }),
        "L" => inner
            .as_array()
            .map_or(3, |l| 3 + l.iter().map(|v| value_size(v) + 1).sum::<u64>()),
        _ => 0,
    }
}

/// Bytes of an item: every attribute's name and value.
pub fn item_size(item: &Item) -> u64 {
    item.iter()
        .map(|(name, v)| name.len() as u64 + value_size(v))
        .sum()
}

/// Write request units of a write whose item is `size` bytes (1 per KB started, 1 at
/// least); a transactional write costs twice this.
pub fn write_units(size: u64) -> f64 {
    size.div_ceil(1024).max(1) as f64
}

/// Read request units of a strongly consistent read of `size` bytes (1 per 4 KB started,
/// 1 at least); an eventually consistent one costs half, a transactional one twice.
pub fn read_units(size: u64) -> f64 {
    size.div_ceil(4096).max(1) as f64
}

/// What one item of one request costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Use {
    /// The operation (`GetItem`, `TransactWriteItems`, ...).
    pub op: String,
    /// The table.
    pub table: String,
    /// The item's partition key, as text (a Query's partition; empty for a Scan).
    pub pk: String,
    /// The item's sort key, as text (empty for a Query or a Scan).
    pub sk: String,
    /// Read request units.
    pub rru: f64,
    /// Write request units.
    pub wru: f64,
    /// Whether the read was strongly consistent (writes: true).
    pub consistent: bool,
    /// The bytes the units were counted from: the item read, or the larger of the item
    /// before and after a write (a Query's or a Scan's: all it read).
    pub size: u64,
}

/// The items of DynamoDB tables keyed `pk` (partition) and `sk` (sort), as the recorded
/// requests leave them.
#[derive(Debug, Default)]
pub struct Shadow {
    tables: HashMap<String, BTreeMap<(String, String), Item>>,
}

/// A key attribute as text: a string's or a number's text, a binary's base64.
fn key_text(v: Option<&Value>) -> String {
    v.and_then(Value::as_object)
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn key_of(item: &Item) -> (String, String) {
    (key_text(item.get("pk")), key_text(item.get("sk")))
}

/// The SDK's attribute value in DynamoDB's JSON form.
pub fn to_json(v: &AttributeValue) -> Value {
    let b64 = |b: &[u8]| Value::from(base64::engine::general_purpose::STANDARD.encode(b));
    let (kind, inner) = match v {
        AttributeValue::S(s) => ("S", Value::from(s.as_str())),
        AttributeValue::N(n) => ("N", Value::from(n.as_str())),
        AttributeValue::B(b) => ("B", b64(b.as_ref())),
        AttributeValue::Bool(b) => ("BOOL", Value::from(*b)),
        AttributeValue::Null(b) => ("NULL", Value::from(*b)),
        AttributeValue::Ss(s) => ("SS", Value::from(s.clone())),
        AttributeValue::Ns(s) => ("NS", Value::from(s.clone())),
        AttributeValue::Bs(s) => ("BS", s.iter().map(|b| b64(b.as_ref())).collect()),
        AttributeValue::M(m) => (
            "M",
            Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        ),
        AttributeValue::L(l) => ("L", l.iter().map(to_json).collect()),
        _ => ("NULL", Value::from(true)),
    };
    let mut o = Map::new();
    o.insert(kind.into(), inner);
    Value::Object(o)
}

impl Shadow {
    /// An empty copy.
    pub fn new() -> Shadow {
        Shadow::default()
    }

    /// Puts `item` into `table`'s copy.
    pub fn insert(&mut self, table: &str, item: Item) {
        self.tables
            .entry(table.to_string())
            .or_default()
            .insert(key_of(&item), item);
    }

    /// Copies every item of `table` (a consistent Scan on `client`, which should not be
    /// one whose requests are being counted).
    pub async fn load(&mut self, client: &Client, table: &str) {
        let mut start = None;
        self.tables.entry(table.to_string()).or_default();
        loop {
            let page = client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan the table to copy it");
            for item in page.items() {
                let item: Item = item.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
                self.insert(table, item);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
    }

    /// The item of `table` at `key`, if the copy has it.
    pub fn get(&self, table: &str, key: &Item) -> Option<&Item> {
        self.tables.get(table)?.get(&key_of(key))
    }

    /// Items in the copy of `table`.
    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, BTreeMap::len)
    }

    fn size_at(&self, table: &str, key: &Item) -> u64 {
        self.get(table, key).map_or(0, item_size)
    }

    fn put(&mut self, table: &str, item: Item) -> u64 {
        let before = self.size_at(table, &item);
        let after = item_size(&item);
        self.insert(table, item);
        before.max(after)
    }

    fn update(&mut self, table: &str, request: &Value) -> u64 {
        let key = object(&request["Key"]);
        let before = self.get(table, &key).cloned();
        let mut item = before.clone().unwrap_or_else(|| key.clone());
        apply_update(
            &mut item,
            request["UpdateExpression"].as_str().unwrap_or(""),
            &object(&request["ExpressionAttributeNames"]),
            &object(&request["ExpressionAttributeValues"]),
        );
        let size = before.as_ref().map_or(0, item_size).max(item_size(&item));
        self.insert(table, item);
        size
    }

    fn delete(&mut self, table: &str, key: &Item) -> u64 {
        self.tables
            .get_mut(table)
            .and_then(|t| t.remove(&key_of(key)))
            .as_ref()
            .map_or(0, item_size)
    }

    /// Applies one recorded request (its operation and JSON body) to the copy and answers
    /// what it costs, item by item; `None` for an operation that reads or writes no item
    /// (`CreateTable`, ...) or is not DynamoDB's.
    pub fn apply(&mut self, op: &str, body: &Value) -> Option<Vec<Use>> {
        let table = body["TableName"].as_str().unwrap_or("").to_string();
        let consistent = body["ConsistentRead"].as_bool().unwrap_or(false);
        let factor = |consistent: bool| if consistent { 1.0 } else { 0.5 };
        // What an item read or written costs: `Read(consistent)` and `Write` as single
        // operations, the `Transact` ones twice a strongly consistent read or a write.
        enum Cost {
            Read(bool),
            TransactRead,
            Write,
            TransactWrite,
        }
        let one = |table: &str, key: &Item, size: u64, cost: Cost| {
            let (pk, sk) = key_of(key);
            let (rru, wru, consistent) = match cost {
                Cost::Read(c) => (read_units(size) * factor(c), 0.0, c),
                Cost::TransactRead => (2.0 * read_units(size), 0.0, true),
                Cost::Write => (0.0, write_units(size), true),
                Cost::TransactWrite => (0.0, 2.0 * write_units(size), true),
            };
            Use {
                op: op.to_string(),
                table: table.to_string(),
                pk,
                sk,
                rru,
                wru,
                consistent,
                size,
            }
        };
        let uses = match op {
            "GetItem" => {
                let key = object(&body["Key"]);
                let size = self.size_at(&table, &key);
                vec![one(&table, &key, size, Cost::Read(consistent))]
            }
            "PutItem" => {
                let item = object(&body["Item"]);
                let key = item.clone();
                let size = self.put(&table, item);
                vec![one(&table, &key, size, Cost::Write)]
            }
            "UpdateItem" => {
                let key = object(&body["Key"]);
                let size = self.update(&table, body);
                vec![one(&table, &key, size, Cost::Write)]
            }
            "DeleteItem" => {
                let key = object(&body["Key"]);
                let size = self.delete(&table, &key);
                vec![one(&table, &key, size, Cost::Write)]
            }
            "TransactWriteItems" => {
                let mut uses = Vec::new();
                for entry in body["TransactItems"].as_array().into_iter().flatten() {
                    let Some((kind, request)) = entry.as_object().and_then(|o| o.iter().next())
                    else {
                        continue;
                    };
                    let table = request["TableName"].as_str().unwrap_or("");
                    let (key, size) = match kind.as_str() {
                        "Put" => {
                            let item = object(&request["Item"]);
                            (item.clone(), self.put(table, item))
                        }
                        "Update" => (object(&request["Key"]), self.update(table, request)),
                        "Delete" => {
                            let key = object(&request["Key"]);
                            let size = self.delete(table, &key);
                            (key, size)
                        }
                        // ConditionCheck: the item it checks.
                        _ => {
                            let key = object(&request["Key"]);
                            let size = self.size_at(table, &key);
                            (key, size)
                        }
                    };
                    uses.push(one(table, &key, size, Cost::TransactWrite));
                }
                uses
            }
            "TransactGetItems" => body["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    let get = &entry["Get"];
                    let table = get["TableName"].as_str().unwrap_or("");
                    let key = object(&get["Key"]);
                    one(table, &key, self.size_at(table, &key), Cost::TransactRead)
                })
                .collect(),
            "BatchGetItem" => {
                let mut uses = Vec::new();
                for (table, request) in object(&body["RequestItems"]) {
                    let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
                    for key in request["Keys"].as_array().into_iter().flatten() {
                        let key = object(key);
                        let size = self.size_at(&table, &key);
                        uses.push(one(&table, &key, size, Cost::Read(consistent)));
                    }
                }
                uses
            }
            "BatchWriteItem" => {
                let mut uses = Vec::new();
                for (table, requests) in object(&body["RequestItems"]) {
                    for request in requests.as_array().into_iter().flatten() {
                        let (key, size) = if let Some(put) = request.get("PutRequest") {
                            let item = object(&put["Item"]);
                            (item.clone(), self.put(&table, item))
                        } else {
                            let key = object(&request["DeleteRequest"]["Key"]);
                            let size = self.delete(&table, &key);
                            (key, size)
                        };
                        uses.push(one(&table, &key, size, Cost::Write));
                    }
                }
                uses
            }
            "Query" | "Scan" => {
                let (pk, size) = self.read_many(op, &table, body);
                let mut u = one(&table, &Item::new(), size, Cost::Read(consistent));
                u.pk = pk;
                vec![u]
            }
            _ => return None,
        };
        Some(uses)
    }

    /// The partition a Query reads (empty for a Scan) and the total size of what it reads.
    fn read_many(&self, op: &str, table: &str, body: &Value) -> (String, u64) {
        let empty = BTreeMap::new();
        let items = self.tables.get(table).unwrap_or(&empty);
        let limit = body["Limit"].as_u64().map_or(usize::MAX, |l| l as usize);
        if op == "Scan" {
            let size = items.values().take(limit).map(item_size).sum();
            return (String::new(), size);
        }
        let names = object(&body["ExpressionAttributeNames"]);
        let values = object(&body["ExpressionAttributeValues"]);
        let condition = body["KeyConditionExpression"].as_str().unwrap_or("");
        let (pk, sk) = key_condition(condition, &names, &values);
        let mut matched: Vec<&Item> = items
            .iter()
            .filter(|((p, _), item)| {
                *p == pk && sk.as_ref().is_none_or(|c| c.holds(item.get("sk")))
            })
            .map(|(_, item)| item)
            .collect();
        if body["ScanIndexForward"].as_bool() == Some(false) {
            matched.reverse();
        }
        let size = matched.into_iter().take(limit).map(item_size).sum();
        (pk, size)
    }
}

fn object(v: &Value) -> Item {
    v.as_object().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------- expressions

/// Splits `text` at `sep` where it is outside parentheses.
fn split_top(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The clauses of an update expression: (`SET`, `REMOVE`, `ADD` or `DELETE`, its actions).
fn clauses(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut depth = 0i32;
    for token in expr.split_whitespace() {
        let upper = token.to_ascii_uppercase();
        if depth == 0 && matches!(upper.as_str(), "SET" | "REMOVE" | "ADD" | "DELETE") {
            out.push((upper, String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(token);
            body.push(' ');
        }
        depth += token.matches('(').count() as i32 - token.matches(')').count() as i32;
    }
    out.into_iter()
        .map(|(k, body)| {
            let actions = split_top(&body, ',')
                .into_iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            (k, actions)
        })
        .collect()
}

/// The top-level attribute a path names, `None` for a nested path.
fn attribute(path: &str, names: &Item) -> Option<String> {
    let path = path.trim();
    if path.contains(['.', '[']) {
        return None;
    }
    Some(match names.get(path).and_then(Value::as_str) {
        Some(name) => name.to_string(),
        None => path.to_string(),
    })
}

fn numbers(a: &str, b: &str, negate: bool) -> String {
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => (if negate { x - y } else { x + y }).to_string(),
        _ => {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            (if negate { x - y } else { x + y }).to_string()
        }
    }
}

fn number_of(v: &Value) -> Option<&str> {
    v.get("N").and_then(Value::as_str)
}

fn n(text: String) -> Value {
    serde_json::json!({ "N": text })
}

/// The value of a SET action's right-hand side.
fn operand(expr: &str, item: &Item, names: &Item, values: &Item) -> Option<Value> {
    let expr = expr.trim();
    // `a + b`, `a - b` (outside parentheses).
    let mut depth = 0i32;
    for (i, c) in expr.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '+' | '-' if depth == 0 && i > 0 => {
                let a = operand(&expr[..i], item, names, values)?;
                let b = operand(&expr[i + 1..], item, names, values)?;
                return Some(n(numbers(number_of(&a)?, number_of(&b)?, c == '-')));
            }
            _ => {}
        }
    }
    let args = |inner: &str| -> Vec<String> {
        let inner = inner.trim().trim_end_matches(')');
        split_top(inner, ',')
            .into_iter()
            .map(|a| a.trim().to_string())
            .collect()
    };
    if let Some(inner) = expr.strip_prefix("if_not_exists(") {
        let a = args(inner);
        let existing = attribute(a.first()?, names).and_then(|name| item.get(&name).cloned());
        return existing.or_else(|| operand(a.get(1)?, item, names, values));
    }
    if let Some(inner) = expr.strip_prefix("list_append(") {
        let a = args(inner);
        let mut list = Vec::new();
        for x in a.iter().take(2) {
            let v = operand(x, item, names, values)?;
            list.extend(
                v.get("L")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        return Some(serde_json::json!({ "L": list }));
    }
    if expr.starts_with(':') {
        return values.get(expr).cloned();
    }
    item.get(&attribute(expr, names)?).cloned()
}

fn set_kind(v: &Value) -> Option<(&String, &Vec<Value>)> {
    let (kind, inner) = v.as_object()?.iter().next()?;
    if matches!(kind.as_str(), "SS" | "NS" | "BS") {
        inner.as_array().map(|a| (kind, a))
    } else {
        None
    }
}

/// Applies an update expression's top-level actions to `item`.
pub fn apply_update(item: &mut Item, expr: &str, names: &Item, values: &Item) {
    for (clause, actions) in clauses(expr) {
        for action in actions {
            match clause.as_str() {
                "SET" => {
                    let parts = split_top(&action, '=');
                    let [path, rhs] = parts.as_slice() else {
                        continue;
                    };
                    let (Some(name), Some(v)) =
                        (attribute(path, names), operand(rhs, item, names, values))
                    else {
                        continue;
                    };
                    item.insert(name, v);
                }
                "REMOVE" => {
                    if let Some(name) = attribute(&action, names) {
                        item.remove(&name);
                    }
                }
                "ADD" | "DELETE" => {
                    let mut words = action.split_whitespace();
                    let (Some(path), Some(value)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let (Some(name), Some(v)) = (attribute(path, names), values.get(value)) else {
                        continue;
                    };
                    let merged = match (item.get(&name), number_of(v), set_kind(v)) {
                        (Some(old), Some(add), _) if clause == "ADD" => Some(
                            number_of(old)
                                .map_or_else(|| old.clone(), |o| n(numbers(o, add, false))),
                        ),
                        (None, _, _) if clause == "ADD" => Some(v.clone()),
                        (Some(old), _, Some((kind, elements))) => {
                            let mut set: Vec<Value> = set_kind(old)
                                .map(|(_, old)| old.clone())
                                .unwrap_or_default();
                            if clause == "ADD" {
                                for e in elements {
                                    if !set.contains(e) {
                                        set.push(e.clone());
                                    }
                                }
                            } else {
                                set.retain(|e| !elements.contains(e));
                            }
                            (!set.is_empty()).then(|| serde_json::json!({ kind.as_str(): set }))
                        }
                        _ => item.get(&name).cloned(),
                    };
                    match merged {
                        Some(v) => item.insert(name, v),
                        None => item.remove(&name),
                    };
                }
                _ => {}
            }
        }
    }
}

/// A condition on the sort key of a Query.
#[derive(Debug, Clone, PartialEq)]
enum SortCondition {
    BeginsWith(String),
    Between(Value, Value),
    Compare(String, Value),
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (number_of(a), number_of(b)) {
        (Some(x), Some(y)) => {
            let (x, y) = (
                x.parse::<f64>().unwrap_or(0.0),
                y.parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y)
        }
        _ => key_text(Some(a)).cmp(&key_text(Some(b))),
    }
}

impl SortCondition {
    fn holds(&self, sk: Option<&Value>) -> bool {
        let Some(sk) = sk else {
            return false;
        };
        match self {
            SortCondition::BeginsWith(prefix) => key_text(Some(sk)).starts_with(prefix.as_str()),
            SortCondition::Between(lo, hi) => {
                compare(sk, lo) != Ordering::Less && compare(sk, hi) != Ordering::Greater
            }
            SortCondition::Compare(op, v) => {
                let o = compare(sk, v);
                match op.as_str() {
                    "<" => o == Ordering::Less,
                    "<=" => o != Ordering::Greater,
                    ">" => o == Ordering::Greater,
                    ">=" => o != Ordering::Less,
                    _ => o == Ordering::Equal,
                }
            }
        }
    }
}

/// The partition a key condition names (as text) and its sort key condition, if any (one
/// it cannot read is dropped: the whole partition is read).
fn key_condition(expr: &str, names: &Item, values: &Item) -> (String, Option<SortCondition>) {
    let value = |token: &str| values.get(token.trim()).cloned().unwrap_or(Value::Null);
    let upper = expr.to_ascii_uppercase();
    let (first, rest) = match upper.find(" AND ") {
        Some(i) => (&expr[..i], Some(&expr[i + 5..])),
        None => (expr, None),
    };
    let pk = split_top(first, '=')
        .get(1)
        .map(|v| key_text(Some(&value(v))))
        .unwrap_or_default();
    let sort = rest.and_then(|rest| {
        let rest = rest.trim();
        if let Some(inner) = rest.strip_prefix("begins_with(") {
            let inner = inner.trim_end_matches(')');
            let arg = split_top(inner, ',').get(1).map(|v| value(v))?;
            return Some(SortCondition::BeginsWith(key_text(Some(&arg))));
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        attribute(words.first()?, names)?;
        match words.as_slice() {
            [_, between, lo, and, hi]
                if between.eq_ignore_ascii_case("BETWEEN") && and.eq_ignore_ascii_case("AND") =>
            {
                Some(SortCondition::Between(value(lo), value(hi)))
            }
            [_, op, v] => Some(SortCondition::Compare(op.to_string(), value(v))),
            _ => None,
        }
    });
    (pk, sort)
}

impl Proxy {
    /// Every request seen since the last reset, in the order they arrived: operation and
    /// body.
    pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.state.bodies.lock().unwrap().clone()
    }
}
