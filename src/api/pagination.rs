//! Lists: keyset (cursor) paging in either direction under a sort chosen from each list's
//! allowlist, and an optional capped total.
//!
//! - `?limit=` 1..=200 (default 50); `?sort=` one of the list's values (default `created_at`,
//!   oldest first; `-created_at` newest first; `name`, `-name`, ... where the list has them).
//! - `next_cursor` / `prev_cursor` of a page go back as `?cursor=`; a cursor remembers its sort
//!   and direction, and the keys of the item it was made at (`(name, id)` for a name sort), so
//!   paging stays exact while rows are added or removed. A cursor made for another sort is a 422.
//! - `?count=exact` adds `total`: exact up to `COUNT_CAP` matching rows, beyond which it is
//!   `COUNT_CAP` with `total_capped: true` (counting millions of rows is a scan, not a query).
//!
//! Statements are fixed at compile time: each list declares one `Keyset` per sort with
//! `keyset!`, which builds its first-page, after- and before-cursor statements with `concat!`.
//! Parameter order in each: the list's own parameters (path ids), `limit`, its filters, then the
//! cursor's keys.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::FieldError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;
/// `?count=exact` counts at most this many rows.
pub const COUNT_CAP: i64 = 10_000;
/// A cursor is a few dozen bytes; anything much longer is not one of ours.
const MAX_CURSOR_LEN: usize = 700;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200, example = 50)]
    pub limit: Option<i64>,
    /// `next_cursor` or `prev_cursor` of a page of this list (with the same `sort`).
    pub cursor: Option<String>,
    /// `exact`: include `total`, the number of matching items (capped at 10,000).
    #[param(inline)]
    pub count: Option<CountMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountMode {
    Exact,
}

/// The order of a sort, and the key kind its cursor carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The id alone (UUIDv7 ids sort by creation time).
    Id,
    /// A text column, then the id.
    Text,
    /// A time column, then the id.
    Time,
    /// An integer column (a sequence number or version), unique on its own.
    Int,
    /// A time column, then a text key.
    TimeText,
}

/// One sort of one list: the statements it pages with, made by `keyset!`. Each comes twice:
/// with the list's filters, and plain (every filter parameter a `$n is null` gate), because a
/// prepared statement's generic plan cannot see that an optional filter is absent: for
/// `($3 is null or lower(name) like $3)` it picks the filter's index and sorts every row of the
/// organization, where the plain form walks the sort's index and stops at the page. Filtered
/// statements run with custom plans (`tenant::read_custom_plan`), planned for their values.
#[derive(Debug)]
pub struct Keyset {
    /// A small number naming the sort inside cursors.
    pub code: u8,
    pub descending: bool,
    pub kind: KeyKind,
    pub first: &'static str,
    pub after: &'static str,
    pub before: &'static str,
    pub plain_first: &'static str,
    pub plain_after: &'static str,
    pub plain_before: &'static str,
}

/// Builds a `Keyset`: `$head` and `$plain` name macros giving the statement up to where the
/// cursor's condition goes (ending inside a `where`), with the filters and with their gates;
/// `$tail` is what follows `limit` (empty, or the end of a lateral join); `$key` the row compared
/// with `$params` (the cursor's placeholders) in `$order`, the ascending column list; `$reverse`
/// the same list descending.
#[macro_export]
macro_rules! keyset {
    ($code:literal, $kind:ident, asc, $head:ident, $plain:ident, $tail:literal, $key:literal, $params:literal, $order:literal, $reverse:literal, $limit:literal) => {
        $crate::api::pagination::Keyset {
            code: $code,
            descending: false,
            kind: $crate::api::pagination::KeyKind::$kind,
            first: concat!($head!(), " order by ", $order, " limit ", $limit, $tail),
            after: concat!(
                $head!(),
                " and ",
                $key,
                " > ",
                $params,
                " order by ",
                $order,
                " limit ",
                $limit,
                $tail
            ),
            before: concat!(
                $head!(),
                " and ",
                $key,
                " < ",
                $params,
                " order by ",
                $reverse,
                " limit ",
                $limit,
                $tail
            ),
            plain_first: concat!($plain!(), " order by ", $order, " limit ", $limit, $tail),
            plain_after: concat!(
                $plain!(),
                " and ",
                $key,
                " > ",
                $params,
                " order by ",
                $order,
                " limit ",
                $limit,
                $tail
            ),
            plain_before: concat!(
                $plain!(),
                " and ",
                $key,
                " < ",
                $params,
                " order by ",
                $reverse,
                " limit ",
                $limit,
                $tail
            ),
        }
    };
    ($code:literal, $kind:ident, desc, $head:ident, $plain:ident, $tail:literal, $key:literal, $params:literal, $order:literal, $reverse:literal, $limit:literal) => {
        $crate::api::pagination::Keyset {
            code: $code,
            descending: true,
            kind: $crate::api::pagination::KeyKind::$kind,
            first: concat!($head!(), " order by ", $reverse, " limit ", $limit, $tail),
            after: concat!(
                $head!(),
                " and ",
                $key,
                " < ",
                $params,
                " order by ",
                $reverse,
                " limit ",
                $limit,
                $tail
            ),
            before: concat!(
                $head!(),
                " and ",
                $key,
                " > ",
                $params,
                " order by ",
                $order,
                " limit ",
                $limit,
                $tail
            ),
            plain_first: concat!($plain!(), " order by ", $reverse, " limit ", $limit, $tail),
            plain_after: concat!(
                $plain!(),
                " and ",
                $key,
                " < ",
                $params,
                " order by ",
                $reverse,
                " limit ",
                $limit,
                $tail
            ),
            plain_before: concat!(
                $plain!(),
                " and ",
                $key,
                " > ",
                $params,
                " order by ",
                $order,
                " limit ",
                $limit,
                $tail
            ),
        }
    };
}

/// Declares a list's `sort` parameter: an enum of its allowed values (documented in the OpenAPI
/// document), each naming the `Keyset` it pages with; the first is the default. An unknown
/// value is a 422 naming `sort` and listing the allowed ones.
#[macro_export]
macro_rules! sorts {
    ($(#[$meta:meta])* $name:ident { $first:ident = $first_value:literal => $first_keyset:path $(, $variant:ident = $value:literal => $keyset:path)* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, utoipa::ToSchema)]
        pub enum $name {
            #[default]
            #[schema(rename = $first_value)]
            $first,
            $(#[schema(rename = $value)] $variant,)*
        }

        impl $name {
            pub const VALUES: &'static [&'static str] = &[$first_value $(, $value)*];

            pub fn keyset(self) -> &'static $crate::api::pagination::Keyset {
                match self {
                    $name::$first => &$first_keyset,
                    $($name::$variant => &$keyset,)*
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                match text.as_str() {
                    $first_value => Ok($name::$first),
                    $($value => Ok($name::$variant),)*
                    _ => Err(serde::de::Error::custom(format!(
                        "`sort` must be one of {}",
                        $name::VALUES.join(", ")
                    ))),
                }
            }
        }
    };
}

/// Where a cursor points: the keys of the item it was made at.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Id(Uuid),
    Text(String, Uuid),
    Time(DateTime<Utc>, Uuid),
    Int(i64),
    TimeText(DateTime<Utc>, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    After,
    Before,
}

#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    sort: u8,
    direction: Direction,
    key: Key,
}

/// A validated page request for one sort.
#[derive(Debug)]
pub struct PageRequest {
    pub limit: i64,
    /// `limit + 1`: one more row than the page, to learn whether another page exists.
    fetch: i64,
    keyset: &'static Keyset,
    cursor: Option<Cursor>,
    count: bool,
    filtered: bool,
}

impl PageQuery {
    /// Validates limit and cursor for `keyset`, the sort the request chose.
    pub fn parse(&self, keyset: &'static Keyset) -> Result<PageRequest, FieldError> {
        self.parse_bounded(keyset, DEFAULT_LIMIT, MAX_LIMIT)
    }

    /// `parse` for a CSV download: pages of up to `csv::MAX_CSV_ROWS` rows.
    pub fn parse_csv(&self, keyset: &'static Keyset) -> Result<PageRequest, FieldError> {
        self.parse_bounded(keyset, super::csv::DEFAULT_CSV_ROWS, super::csv::MAX_CSV_ROWS)
    }

    fn parse_bounded(
        &self,
        keyset: &'static Keyset,
        default: i64,
        max: i64,
    ) -> Result<PageRequest, FieldError> {
        let limit = self.limit.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(FieldError::new("limit", format!("must be between 1 and {max}")));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(text) => {
                let cursor =
                    decode(text).ok_or_else(|| FieldError::new("cursor", "is not a cursor from this API"))?;
                if cursor.sort != keyset.code || !kind_matches(keyset.kind, &cursor.key) {
                    return Err(FieldError::new(
                        "cursor",
                        "was made for another sort; send the sort it came with",
                    ));
                }
                Some(cursor)
            }
        };
        Ok(PageRequest {
            limit,
            fetch: limit + 1,
            keyset,
            cursor,
            count: self.count.is_some(),
            filtered: false,
        })
    }
}

fn kind_matches(kind: KeyKind, key: &Key) -> bool {
    matches!(
        (kind, key),
        (KeyKind::Id, Key::Id(_))
            | (KeyKind::Text, Key::Text(..))
            | (KeyKind::Time, Key::Time(..))
            | (KeyKind::Int, Key::Int(_))
            | (KeyKind::TimeText, Key::TimeText(..))
    )
}

impl PageRequest {
    /// Whether any of the list's filters is set: then the filtered statements run, with custom
    /// plans; otherwise the plain ones (see `Keyset`).
    pub fn filtered(mut self, any: bool) -> PageRequest {
        self.filtered = any;
        self
    }

    /// The statement for this page.
    pub fn sql(&self) -> &'static str {
        let k = self.keyset;
        match (&self.cursor, self.filtered) {
            (None, true) => k.first,
            (None, false) => k.plain_first,
            (Some(c), true) if c.direction == Direction::After => k.after,
            (Some(c), false) if c.direction == Direction::After => k.plain_after,
            (Some(_), true) => k.before,
            (Some(_), false) => k.plain_before,
        }
    }

    /// Runs this page's statement in a tenant read (`tenant::read`, or with custom plans when
    /// filtered).
    pub async fn read(
        &self,
        db: &crate::db::Db,
        actor: crate::db::Actor,
        org: Option<crate::domain::OrgId>,
        params: crate::db::Params<'_>,
    ) -> Result<(Option<crate::domain::Membership>, Vec<tokio_postgres::Row>), crate::db::DbError> {
        if self.filtered {
            crate::db::tenant::read_custom_plan(db, actor, org, self.sql(), params).await
        } else {
            crate::db::tenant::read(db, actor, org, self.sql(), params).await
        }
    }

    /// The row limit, bound where the list's statements put `limit`.
    pub fn fetch(&self) -> &i64 {
        &self.fetch
    }

    /// Whether the caller asked for `total`.
    pub fn wants_count(&self) -> bool {
        self.count
    }

    /// Appends the cursor's keys to `params` (none on a first page).
    pub fn with_keys<'a>(&'a self, mut params: Vec<&'a (dyn ToSql + Sync)>) -> Vec<&'a (dyn ToSql + Sync)> {
        match self.cursor.as_ref().map(|c| &c.key) {
            None => {}
            Some(Key::Id(id)) => params.push(id),
            Some(Key::Text(text, id)) => {
                params.push(text);
                params.push(id);
            }
            Some(Key::Time(time, id)) => {
                params.push(time);
                params.push(id);
            }
            Some(Key::Int(n)) => params.push(n),
            Some(Key::TimeText(time, text)) => {
                params.push(time);
                params.push(text);
            }
        }
        params
    }

    /// Builds the page from the rows the statement returned (up to `limit + 1`, in the
    /// statement's order: reversed for a before-cursor). `key_of` gives an item's keys for the
    /// sort, `total` the count when it was asked for.
    pub fn page<T: ToSchema>(
        &self,
        mut items: Vec<T>,
        total: Option<i64>,
        key_of: impl Fn(&T) -> Key,
    ) -> Page<T> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let more = items.len() > limit;
        items.truncate(limit);
        let backwards = self.cursor.as_ref().is_some_and(|c| c.direction == Direction::Before);
        if backwards {
            items.reverse();
        }
        let make = |direction, item: Option<&T>| {
            item.map(|item| encode(&Cursor { sort: self.keyset.code, direction, key: key_of(item) }))
        };
        // Forward: more rows means a next page; having come by a cursor means a previous one.
        // Backward: the same, mirrored.
        let (has_next, has_prev) = if backwards { (true, more) } else { (more, self.cursor.is_some()) };
        Page {
            next_cursor: if has_next { make(Direction::After, items.last()) } else { None },
            prev_cursor: if has_prev { make(Direction::Before, items.first()) } else { None },
            items,
            total: total.map(|n| n.min(COUNT_CAP)),
            total_capped: total.map(|n| n > COUNT_CAP),
        }
    }
}

/// The cap bound as a count statement's limit: one more than `COUNT_CAP`, to know it was hit.
pub const COUNT_FETCH: i64 = COUNT_CAP + 1;

fn encode(cursor: &Cursor) -> String {
    let mut bytes = vec![1u8, cursor.sort, u8::from(cursor.direction == Direction::Before)];
    match &cursor.key {
        Key::Id(id) => {
            bytes.push(b'i');
            bytes.extend_from_slice(id.as_bytes());
        }
        Key::Text(text, id) => {
            bytes.push(b's');
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        Key::Time(time, id) => {
            bytes.push(b't');
            bytes.extend_from_slice(id.as_bytes());
            bytes.extend_from_slice(&time.timestamp_micros().to_be_bytes());
        }
        Key::Int(n) => {
            bytes.push(b'n');
            bytes.extend_from_slice(&n.to_be_bytes());
        }
        Key::TimeText(time, text) => {
            bytes.push(b'x');
            bytes.extend_from_slice(&time.timestamp_micros().to_be_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode(text: &str) -> Option<Cursor> {
    if text.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let (&[1, sort, direction, kind], rest) = bytes.split_first_chunk::<4>()? else { return None };
    let direction = match direction {
        0 => Direction::After,
        1 => Direction::Before,
        _ => return None,
    };
    let id = |rest: &[u8]| rest.get(..16).and_then(|b| Uuid::from_slice(b).ok());
    let key = match kind {
        b'i' if rest.len() == 16 => Key::Id(id(rest)?),
        b's' => Key::Text(String::from_utf8(rest.get(16..)?.to_vec()).ok()?, id(rest)?),
        b't' if rest.len() == 24 => {
            let micros = i64::from_be_bytes(rest[16..].try_into().ok()?);
            Key::Time(DateTime::from_timestamp_micros(micros)?, id(rest)?)
        }
        b'n' if rest.len() == 8 => Key::Int(i64::from_be_bytes(rest.try_into().ok()?)),
        b'x' if rest.len() >= 8 => {
            let micros = i64::from_be_bytes(rest[..8].try_into().ok()?);
            Key::TimeText(
                DateTime::from_timestamp_micros(micros)?,
                String::from_utf8(rest[8..].to_vec()).ok()?,
            )
        }
        _ => return None,
    };
    Some(Cursor { sort, direction, key })
}

/// One page of items.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` (with the same `sort`) for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Pass as `cursor` for the page before this one; null on the first page.
    pub prev_cursor: Option<String>,
    /// With `count=exact`: the number of items matching the filters, at most 10,000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// With `count=exact`: true when more than 10,000 items match (`total` is then 10,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_capped: Option<bool>,
}

/// `total`, when the page request asked for it: `sql` is the list's count statement (at most
/// `COUNT_FETCH` rows, bound where the list binds its limit), run after authorization.
pub async fn total(
    db: &crate::db::Db,
    principal: &crate::auth::Principal,
    org: Option<crate::domain::OrgId>,
    request: &PageRequest,
    sql: &'static str,
    params: crate::db::Params<'_>,
) -> Result<Option<i64>, crate::api::ApiError> {
    if !request.wants_count() {
        return Ok(None);
    }
    let (_, rows) = crate::db::tenant::read_custom_plan(db, principal.actor(), org, sql, params).await?;
    Ok(rows.first().map(|r| r.get(0)))
}

/// A `name_prefix` filter as a `like` pattern (case-insensitive, on `lower(name)`), with the
/// pattern's own wildcards escaped.
pub fn prefix_pattern(field: &'static str, prefix: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(prefix) = prefix else { return Ok(None) };
    if prefix.is_empty() || prefix.chars().count() > 200 {
        return Err(FieldError::new(field, "must be 1 to 200 characters"));
    }
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Ok(Some(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! by_id {
        () => {
            "select id from t where o = $1"
        };
    }
    macro_rules! by_name {
        () => {
            "select id, name from t where o = $1"
        };
    }
    static BY_ID: Keyset = crate::keyset!(1, Id, asc, by_id, by_id, "", "id", "$2", "id", "id desc", "$3");
    static BY_NAME_DESC: Keyset = crate::keyset!(
        4,
        Text,
        desc,
        by_name,
        by_name,
        "",
        "(name, id)",
        "($3, $4)",
        "name, id",
        "name desc, id desc",
        "$2"
    );

    fn query(cursor: Option<String>) -> PageQuery {
        PageQuery { limit: Some(2), cursor, count: None }
    }

    #[test]
    fn statements_are_fixed_per_sort_and_direction() {
        assert_eq!(BY_ID.first, "select id from t where o = $1 order by id limit $3");
        assert_eq!(BY_ID.after, "select id from t where o = $1 and id > $2 order by id limit $3");
        assert_eq!(BY_ID.before, "select id from t where o = $1 and id < $2 order by id desc limit $3");
        assert_eq!(
            BY_NAME_DESC.after,
            "select id, name from t where o = $1 and (name, id) < ($3, $4) order by name desc, id desc limit $2"
        );
        assert_eq!(
            BY_NAME_DESC.before,
            "select id, name from t where o = $1 and (name, id) > ($3, $4) order by name, id limit $2"
        );
    }

    #[test]
    fn cursors_round_trip_and_page_both_ways() {
        assert!(PageQuery { limit: Some(0), cursor: None, count: None }.parse(&BY_ID).is_err());
        assert!(PageQuery { limit: Some(201), cursor: None, count: None }.parse(&BY_ID).is_err());
        assert!(query(Some("not-a-cursor!".into())).parse(&BY_ID).is_err());
        assert!(query(Some("A".repeat(MAX_CURSOR_LEN + 1))).parse(&BY_ID).is_err());

        let ids: Vec<String> = (0..3).map(|_| Uuid::now_v7().to_string()).collect();
        let key = |id: &String| Key::Id(id.parse().unwrap());
        let first = query(None).parse(&BY_ID).unwrap();
        assert_eq!(first.sql(), BY_ID.plain_first);
        let first = first.filtered(true);
        assert_eq!(first.sql(), BY_ID.first);
        let page = first.page(ids.clone(), None, key);
        assert_eq!(page.items, ids[..2]);
        assert!(page.prev_cursor.is_none());
        let next = query(page.next_cursor).parse(&BY_ID).unwrap();
        assert_eq!(next.sql(), BY_ID.plain_after);
        assert_eq!(next.with_keys(vec![]).len(), 1);
        let page = next.page(vec![ids[2].clone()], Some(3), key);
        assert!(page.next_cursor.is_none() && page.prev_cursor.is_some());
        assert_eq!((page.total, page.total_capped), (Some(3), Some(false)));
        // Back: the before-statement returns rows nearest first; the page is in list order.
        let back = query(page.prev_cursor).parse(&BY_ID).unwrap();
        assert_eq!(back.sql(), BY_ID.plain_before);
        let page = back.page(vec![ids[1].clone(), ids[0].clone()], Some(COUNT_CAP + 1), key);
        assert_eq!(page.items, ids[..2]);
        assert!(page.next_cursor.is_some() && page.prev_cursor.is_none());
        assert_eq!((page.total, page.total_capped), (Some(COUNT_CAP), Some(true)));
    }

    #[test]
    fn a_cursor_belongs_to_its_sort_and_carries_text_keys_intact() {
        let id = Uuid::now_v7();
        let cursor = encode(&Cursor {
            sort: 4,
            direction: Direction::After,
            key: Key::Text("Ünïcode, \"quoted\"".into(), id),
        });
        let request = query(Some(cursor.clone())).parse(&BY_NAME_DESC).unwrap();
        assert_eq!(request.cursor.unwrap().key, Key::Text("Ünïcode, \"quoted\"".into(), id));
        let err = query(Some(cursor)).parse(&BY_ID).unwrap_err();
        assert_eq!(err.field, "cursor");
        let time = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let cursor = encode(&Cursor { sort: 9, direction: Direction::Before, key: Key::Time(time, id) });
        assert_eq!(decode(&cursor).unwrap().key, Key::Time(time, id));
    }

    #[test]
    fn prefixes_escape_wildcards() {
        assert_eq!(prefix_pattern("name_prefix", Some("Pro_d%")).unwrap().unwrap(), "pro\\_d\\%%");
        assert!(prefix_pattern("name_prefix", Some("")).is_err());
        assert_eq!(prefix_pattern("name_prefix", None).unwrap(), None);
    }
}
