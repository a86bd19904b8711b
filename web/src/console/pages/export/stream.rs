//! The body of a download, written while it is sent: the writers fill a [`PageBuffer`] a page
//! of the store at a time, and each page goes to the client as one chunk. CSV cells are written
//! here too, defused against spreadsheet formulas.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use gateway::record::export::ExportError;
use gateway::store::StoreError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Chunks waiting for a slow client: the reader stops ahead of it by this many pages.
const CHUNKS_AHEAD: usize = 4;

/// Why an export stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(super) enum StreamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot write a JSON line: {0}")]
    Json(#[from] serde_json::Error),
    /// The client went away: nothing to report.
    #[error("the client closed the download")]
    Gone,
}

/// Where a producer sends its chunks; the response body streams them.
pub(super) struct Chunks {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Chunks {
    pub(super) async fn send(&self, bytes: Vec<u8>) -> Result<(), StreamError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Ok(Bytes::from(bytes)))
            .await
            .map_err(|_| StreamError::Gone)
    }
}

/// An attachment whose body `produce` writes on a task of its own, chunk by chunk, as fast as
/// the client reads. A failure midway cuts the download short (the client sees an incomplete
/// transfer, and a cut recording fails `pgbastion verify`) and is logged.
pub(super) fn download<F, Fut>(content_type: &'static str, filename: &str, produce: F) -> Response
where
    F: FnOnce(Chunks) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StreamError>> + Send,
{
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    let name = filename.to_string();
    tokio::spawn(async move {
        let failed = tx.clone();
        match produce(Chunks { tx }).await {
            Ok(()) | Err(StreamError::Gone) => {}
            Err(e) => {
                tracing::error!(error = %e, file = %name, "export failed midway; download cut");
                let _ = failed.send(Err(std::io::Error::other(e.to_string()))).await;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

/// A writer into memory that the producer empties after each page (the export writers own
/// their output for their whole life, so the producer keeps a clone to empty).
#[derive(Clone, Default)]
pub(super) struct PageBuffer(Arc<Mutex<Vec<u8>>>);

impl PageBuffer {
    pub(super) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("page buffer lock"))
    }

    /// `value` as one line of JSON.
    pub(super) fn json_line(&self, value: &impl serde::Serialize) -> Result<(), StreamError> {
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        self.0.lock().expect("page buffer lock").extend(line);
        Ok(())
    }
}

impl Write for PageBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("page buffer lock")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// --- CSV ---

/// A CSV writer into `buffer`, with the CRLF line ends of RFC 4180 (what spreadsheets expect).
pub(super) fn csv_writer(buffer: &PageBuffer) -> csv::Writer<PageBuffer> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(buffer.clone())
}

/// Sends what the CSV writer has written so far (and anything else in the buffer).
pub(super) async fn send_csv(
    csv: &mut csv::Writer<PageBuffer>,
    buffer: &PageBuffer,
    out: &Chunks,
) -> Result<(), StreamError> {
    csv.flush().map_err(csv::Error::from)?;
    out.send(buffer.take()).await
}

/// A cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a tab or carriage
/// return before one) gets a leading apostrophe, so it shows as the text it is. Recorded SQL and
/// values come from whoever ran the session: opening an export must not run their formulas
/// (CSV injection). The apostrophe is visible in the file; the CSV quoting is untouched.
pub(super) fn defuse(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// [`defuse`] as an owned cell.
pub(super) fn text_cell(cell: &str) -> String {
    defuse(cell).into_owned()
}

/// A time to the microsecond the recording keeps, in UTC.
pub(super) fn time_cell(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Microseconds as milliseconds with three exact decimals (no float rounding).
pub(super) fn millis(micros: u64) -> String {
    format!("{}.{:03}", micros / 1000, micros % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_get_an_apostrophe_and_others_stay() {
        for risky in [
            "=HYPERLINK(\"x\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            assert_eq!(defuse(risky), format!("'{risky}"));
        }
        for plain in ["SELECT 1", "", "'quoted'", " =not first"] {
            assert_eq!(defuse(plain), plain);
        }
    }

    #[test]
    fn durations_are_exact_decimals() {
        assert_eq!(millis(1_234_567), "1234.567");
        assert_eq!(millis(5), "0.005");
    }
}
