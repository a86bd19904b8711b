//! A recording as a JSONL file, verifiable away from the gateway (`pgbastion verify --file`).
//!
//! Line 1 is a header, `{"pgbastion_recording":1,"session_id":"…","public_key_id":"…"|null}`;
//! then one line per stored event, in seq order,
//! `{"seq":0,"at":"…","kind":"session_start","body":"…","prev_hash":"<hex>","hash":"<hex>"}`,
//! where `body` is the canonical JSON exactly as hashed (a string, so that no reformatting of the
//! file can change the bytes the chain covers); and, when the recording is sealed, a last line
//! `{"seal":{"event_count":…,"final_hash":"<hex>","signature":"<hex>","key_id":"…","sealed_at":"…"}}`.

use std::io::{BufRead, Read, Write};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{RecordingSeal, StoredEvent};

/// The export format version (the `pgbastion_recording` field of the header).
pub const EXPORT_VERSION: u32 = 1;

/// Longest line read back: far above the event caps, low enough that a corrupt file without
/// newlines cannot exhaust memory.
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot {action} the export: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("the export is empty: it should start with a {{\"pgbastion_recording\": 1, …}} line")]
    Empty,
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error(
        "the export is format {found}, this pgbastion reads format {EXPORT_VERSION}: verify it \
         with a pgbastion of that version"
    )]
    UnsupportedVersion { found: u32 },
    #[error("event seq {seq} belongs to session {other}, not to the exported session {session_id}")]
    ForeignEvent {
        seq: i64,
        session_id: Uuid,
        other: Uuid,
    },
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    pub pgbastion_recording: u32,
    pub session_id: Uuid,
    /// The key that sealed the recording, so the reader knows which public key to ask for.
    pub public_key_id: Option<String>,
}

/// A recording read back from an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedRecording {
    pub header: ExportHeader,
    pub events: Vec<StoredEvent>,
    pub seal: Option<RecordingSeal>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    seq: i64,
    at: DateTime<Utc>,
    kind: String,
    body: String,
    prev_hash: String,
    hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealLine {
    seal: SealFields,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealFields {
    event_count: i64,
    final_hash: String,
    signature: String,
    key_id: String,
    sealed_at: DateTime<Utc>,
}

/// Writes an export line by line, so a long recording can be exported page by page.
pub struct JsonlWriter<W: Write> {
    out: W,
    session_id: Uuid,
}

impl<W: Write> JsonlWriter<W> {
    /// Writes the header.
    pub fn new(
        mut out: W,
        session_id: Uuid,
        public_key_id: Option<&str>,
    ) -> Result<Self, ExportError> {
        let header = ExportHeader {
            pgbastion_recording: EXPORT_VERSION,
            session_id,
            public_key_id: public_key_id.map(str::to_string),
        };
        write_line(&mut out, &header)?;
        Ok(JsonlWriter { out, session_id })
    }

    pub fn event(&mut self, event: &StoredEvent) -> Result<(), ExportError> {
        if event.session_id != self.session_id {
            return Err(ExportError::ForeignEvent {
                seq: event.seq,
                session_id: self.session_id,
                other: event.session_id,
            });
        }
        let line = EventLine {
            seq: event.seq,
            at: event.at,
            kind: event.kind.clone(),
            body: event.body.clone(),
            prev_hash: hex::encode(&event.prev_hash),
            hash: hex::encode(&event.hash),
        };
        write_line(&mut self.out, &line)
    }

    /// Writes the seal line, if any, and flushes.
    pub fn finish(mut self, seal: Option<&RecordingSeal>) -> Result<W, ExportError> {
        if let Some(seal) = seal {
            let line = SealLine {
                seal: SealFields {
                    event_count: seal.event_count,
                    final_hash: hex::encode(&seal.final_hash),
                    signature: hex::encode(&seal.signature),
                    key_id: seal.key_id.clone(),
                    sealed_at: seal.sealed_at,
                },
            };
            write_line(&mut self.out, &line)?;
        }
        self.out.flush().map_err(|source| ExportError::Io {
            action: "write",
            source,
        })?;
        Ok(self.out)
    }
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), ExportError> {
    let io = |source| ExportError::Io {
        action: "write",
        source,
    };
    serde_json::to_writer(&mut *out, value).map_err(|e| io(e.into()))?;
    out.write_all(b"\n").map_err(io)
}

/// Writes a whole recording of `session_id`; the header names the seal's key.
pub fn write_jsonl<'a, W: Write>(
    out: W,
    session_id: Uuid,
    events: impl IntoIterator<Item = &'a StoredEvent>,
    seal: Option<&RecordingSeal>,
) -> Result<W, ExportError> {
    let mut writer = JsonlWriter::new(out, session_id, seal.map(|s| s.key_id.as_str()))?;
    for event in events {
        writer.event(event)?;
    }
    writer.finish(seal)
}

/// Reads an export back. Every malformed line is refused with its number; blank lines are
/// skipped.
pub fn read_jsonl(mut input: impl BufRead) -> Result<ExportedRecording, ExportError> {
    let mut header: Option<ExportHeader> = None;
    let mut events = Vec::new();
    let mut seal: Option<RecordingSeal> = None;
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        number += 1;
        let read = (&mut input)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| ExportError::Io {
                action: "read",
                source,
            })?;
        if read == 0 {
            break;
        }
        let bad = |message: String| ExportError::Line {
            line: number,
            message,
        };
        if buf.len() as u64 > MAX_LINE_BYTES {
            return Err(bad(format!(
                "longer than {} MiB: this is not a pgbastion export",
                MAX_LINE_BYTES / 1024 / 1024
            )));
        }
        let text = std::str::from_utf8(&buf).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let Some(session_id) = header.as_ref().map(|h| h.session_id) else {
            header = Some(parse_header(text, number)?);
            continue;
        };
        if seal.is_some() {
            return Err(bad("nothing may follow the seal line".into()));
        }
        if text.starts_with("{\"seal\"") {
            seal = Some(parse_seal(text, session_id).map_err(bad)?);
        } else {
            events.push(parse_event(text, session_id).map_err(bad)?);
        }
    }
    let header = header.ok_or(ExportError::Empty)?;
    Ok(ExportedRecording {
        header,
        events,
        seal,
    })
}

fn parse_header(text: &str, line: usize) -> Result<ExportHeader, ExportError> {
    let header: ExportHeader = serde_json::from_str(text).map_err(|e| ExportError::Line {
        line,
        message: format!("not a pgbastion recording header ({e}); is this a pgbastion export?"),
    })?;
    if header.pgbastion_recording != EXPORT_VERSION {
        return Err(ExportError::UnsupportedVersion {
            found: header.pgbastion_recording,
        });
    }
    Ok(header)
}

fn parse_event(text: &str, session_id: Uuid) -> Result<StoredEvent, String> {
    let line: EventLine =
        serde_json::from_str(text).map_err(|e| format!("not a recording event ({e})"))?;
    Ok(StoredEvent {
        session_id,
        seq: line.seq,
        at: line.at,
        kind: line.kind,
        body: line.body,
        prev_hash: decode_hex("prev_hash", &line.prev_hash)?,
        hash: decode_hex("hash", &line.hash)?,
    })
}

fn parse_seal(text: &str, session_id: Uuid) -> Result<RecordingSeal, String> {
    let line: SealLine =
        serde_json::from_str(text).map_err(|e| format!("not a recording seal ({e})"))?;
    let seal = line.seal;
    Ok(RecordingSeal {
        session_id,
        event_count: seal.event_count,
        final_hash: decode_hex("final_hash", &seal.final_hash)?,
        signature: decode_hex("signature", &seal.signature)?,
        key_id: seal.key_id,
        sealed_at: seal.sealed_at,
    })
}

fn decode_hex(field: &str, text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text).map_err(|e| format!("{field} is not hex ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::chain::{Chain, RecordingKey, verify};
    use crate::record::event::{Event, EventKind};

    fn recording(session_id: Uuid) -> (Vec<StoredEvent>, RecordingSeal) {
        let dir = tempfile::tempdir().unwrap();
        let key = RecordingKey::load_or_create(&dir.path().join("recording.key")).unwrap();
        let mut chain = Chain::new(session_id);
        let kinds = [
            EventKind::Sync,
            EventKind::ParameterStatus {
                name: "TimeZone".into(),
                // Quotes, a newline and non-ASCII text must survive the trip byte for byte.
                value: "Europe/Zürich \"x\"\n".into(),
            },
            EventKind::ReadyForQuery { status: 'I' },
        ];
        let events = kinds
            .into_iter()
            .enumerate()
            .map(|(seq, kind)| {
                let event = Event {
                    seq: seq as u64,
                    at: Utc::now(),
                    kind,
                };
                chain.append(&event).unwrap()
            })
            .collect();
        (events, chain.seal(&key))
    }

    fn export(session_id: Uuid, events: &[StoredEvent], seal: Option<&RecordingSeal>) -> String {
        String::from_utf8(write_jsonl(Vec::new(), session_id, events, seal).unwrap()).unwrap()
    }

    #[test]
    fn sealed_recording_survives_a_round_trip_through_jsonl() {
        let session_id = Uuid::new_v4();
        let (events, seal) = recording(session_id);
        let text = export(session_id, &events, Some(&seal));
        assert_eq!(text.lines().count(), 1 + events.len() + 1);
        let back = read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(back.header.session_id, session_id);
        assert_eq!(
            back.header.public_key_id.as_deref(),
            Some(seal.key_id.as_str())
        );
        assert_eq!(back.events, events);
        assert_eq!(back.seal, Some(seal));
    }

    #[test]
    fn exported_recording_still_verifies() {
        let session_id = Uuid::new_v4();
        let dir = tempfile::tempdir().unwrap();
        let key = RecordingKey::load_or_create(&dir.path().join("recording.key")).unwrap();
        let mut chain = Chain::new(session_id);
        let event = Event {
            seq: 0,
            at: Utc::now(),
            kind: EventKind::Sync,
        };
        let events = vec![chain.append(&event).unwrap()];
        let seal = chain.seal(&key);
        let back = read_jsonl(export(session_id, &events, Some(&seal)).as_bytes()).unwrap();
        let report = verify(
            session_id,
            &back.events,
            back.seal.as_ref(),
            &key.verifier(),
        )
        .unwrap();
        assert!(report.sealed);
        assert_eq!(report.events, 1);
    }

    #[test]
    fn unsealed_recording_exports_without_a_seal_line() {
        let session_id = Uuid::new_v4();
        let (events, _) = recording(session_id);
        let text = export(session_id, &events, None);
        let back = read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(back.header.public_key_id, None);
        assert_eq!(back.seal, None);
        assert_eq!(back.events.len(), events.len());
    }

    #[test]
    fn garbage_line_is_refused_with_its_line_number() {
        let session_id = Uuid::new_v4();
        let (events, seal) = recording(session_id);
        let text = export(session_id, &events, Some(&seal));
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "this is not json";
        let err = read_jsonl(lines.join("\n").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 3: not a recording event"), "{err}");
    }

    #[test]
    fn bad_hex_in_a_hash_names_the_line_and_field() {
        let session_id = Uuid::new_v4();
        let (events, _) = recording(session_id);
        let text = export(session_id, &events, None).replacen("\"hash\":\"", "\"hash\":\"zz", 1);
        let err = read_jsonl(text.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("line 2: hash is not hex"), "{err}");
    }

    #[test]
    fn file_that_is_not_an_export_is_refused_on_line_one() {
        let err = read_jsonl(&b"{\"hello\": 1}\n"[..])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("line 1: not a pgbastion recording header"),
            "{err}"
        );
        assert!(matches!(read_jsonl(&b"\n\n"[..]), Err(ExportError::Empty)));
    }

    #[test]
    fn newer_export_version_is_refused_naming_both_versions() {
        let text = format!(
            "{{\"pgbastion_recording\":2,\"session_id\":\"{}\",\"public_key_id\":null}}\n",
            Uuid::new_v4()
        );
        let err = read_jsonl(text.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("format 2") && err.contains("format 1"),
            "{err}"
        );
    }

    #[test]
    fn line_after_the_seal_is_refused() {
        let session_id = Uuid::new_v4();
        let (events, seal) = recording(session_id);
        let mut text = export(session_id, &events, Some(&seal));
        let first_event = text.lines().nth(1).unwrap().to_string();
        text.push_str(&first_event);
        let err = read_jsonl(text.as_bytes()).unwrap_err().to_string();
        assert!(err.ends_with("nothing may follow the seal line"), "{err}");
    }

    #[test]
    fn event_of_another_session_is_not_exported() {
        let (events, _) = recording(Uuid::new_v4());
        let err = write_jsonl(Vec::new(), Uuid::new_v4(), &events, None).unwrap_err();
        assert!(
            matches!(err, ExportError::ForeignEvent { seq: 0, .. }),
            "{err}"
        );
    }
}
