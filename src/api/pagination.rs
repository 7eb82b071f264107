//! Cursor pagination shared by every list: `?limit=` (1..=200, default 50) and an opaque
//! `?cursor=` from the previous page's `next_cursor`. Lists are ordered by id (UUIDv7, so by
//! creation time), which the `(organization_id, id)` primary key serves directly.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::FieldError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    /// Return items with an id greater than this (nil: from the start).
    pub after: Uuid,
}

impl PageRequest {
    /// Rows to fetch: one more than the page, to learn whether another page exists.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

impl PageQuery {
    pub fn parse(&self) -> Result<PageRequest, FieldError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(FieldError::new("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let after = match &self.cursor {
            None => Uuid::nil(),
            Some(c) => {
                decode_cursor(c).ok_or_else(|| FieldError::new("cursor", "is not a cursor from this API"))?
            }
        };
        Ok(PageRequest { limit, after })
    }
}

fn decode_cursor(cursor: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    Uuid::from_slice(&bytes).ok()
}

fn encode_cursor(id: &Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// One page of items.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// Builds a page from up to `limit + 1` items already in id order.
    pub fn from_items(mut items: Vec<T>, request: PageRequest, id_of: impl Fn(&T) -> Uuid) -> Page<T> {
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| encode_cursor(&id_of(last)))
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded_and_cursors_round_trip() {
        assert!(PageQuery { limit: Some(0), cursor: None }.parse().is_err());
        assert!(PageQuery { limit: Some(201), cursor: None }.parse().is_err());
        assert!(PageQuery { limit: None, cursor: Some("not-a-cursor!".into()) }.parse().is_err());
        let id = Uuid::now_v7();
        let parsed = PageQuery { limit: Some(2), cursor: Some(encode_cursor(&id)) }.parse().unwrap();
        assert_eq!(parsed.after, id);
        let page = Page::from_items(vec![1u8, 2, 3], parsed, |_| id);
        assert_eq!(page.items, vec![1, 2]);
        assert!(page.next_cursor.is_some());
    }
}
