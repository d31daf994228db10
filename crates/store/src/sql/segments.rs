//! An app's named segments: stored as the expression prints, parsed again
//! when read.

use sqlx::Row;

use super::mapping::corrupt;
use super::{SqlStore, R};
use crate::{AppId, Condition, SegmentRow};

pub(super) async fn create(store: &SqlStore, app: AppId, segment: &SegmentRow) -> R<bool> {
    let done = sqlx::query(
        "INSERT INTO segments (app_id, name, expression, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (app_id, name) DO NOTHING",
    )
    .bind(app.0)
    .bind(segment.name.as_str())
    .bind(segment.condition.as_str())
    .bind(segment.created_at)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn from_row(row: &sqlx::any::AnyRow) -> R<SegmentRow> {
    let text: String = row.try_get("expression")?;
    Ok(SegmentRow {
        name: row.try_get("name")?,
        condition: Condition::parse(&text).map_err(corrupt)?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) async fn list(store: &SqlStore, app: AppId) -> R<Vec<SegmentRow>> {
    let rows = sqlx::query("SELECT name, expression, created_at FROM segments WHERE app_id = $1 ORDER BY name")
        .bind(app.0)
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn get(store: &SqlStore, app: AppId, name: &str) -> R<Option<SegmentRow>> {
    let row = sqlx::query("SELECT name, expression, created_at FROM segments WHERE app_id = $1 AND name = $2")
        .bind(app.0)
        .bind(name)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub(super) async fn delete(store: &SqlStore, app: AppId, name: &str) -> R<bool> {
    let done = sqlx::query("DELETE FROM segments WHERE app_id = $1 AND name = $2")
        .bind(app.0)
        .bind(name)
        .execute(&store.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}
