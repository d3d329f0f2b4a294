//! The last-value cache: a JetStream stream over every quote subject that keeps
//! one message per subject (`max_msgs_per_subject = 1`), so it holds each
//! symbol's latest full quote. Edges read a symbol's last value when they start
//! following it; a publisher reads them all at start-up to continue each
//! symbol's `seq`, and may create the stream.

use async_nats::jetstream::{self, stream};
use async_nats::Client;
use bytes::Bytes;
use futures_util::TryStreamExt;

use super::wire::ALL_SUBJECTS;
use super::BusError;

/// A last-value stream, opened by name.
#[derive(Clone)]
pub struct LastValues {
    name: String,
    stream: stream::Stream<()>,
}

fn stream_error(name: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Stream {
        stream: name.to_owned(),
        problem: e.to_string(),
    }
}

impl LastValues {
    /// Opens the stream `name` (without asking the server anything yet).
    pub async fn open(client: &Client, name: &str) -> Result<LastValues, BusError> {
        let stream = jetstream::new(client.clone())
            .get_stream_no_info(name)
            .await
            .map_err(|e| stream_error(name, e))?;
        Ok(LastValues {
            name: name.to_owned(),
            stream,
        })
    }

    /// Creates the stream `name` as a last-value cache unless it exists.
    pub async fn create(client: &Client, name: &str) -> Result<(), BusError> {
        jetstream::new(client.clone())
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![ALL_SUBJECTS.to_owned()],
                max_messages_per_subject: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error(name, e))?;
        Ok(())
    }

    /// The last message on `subject`, if the stream holds one.
    pub async fn last(&self, subject: &str) -> Result<Option<Bytes>, BusError> {
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m.payload)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(stream_error(&self.name, e)),
        }
    }

    /// Every subject's last message, as (subject, payload).
    pub async fn all(&self) -> Result<Vec<(String, Bytes)>, BusError> {
        let mut subjects: Vec<String> = Vec::new();
        let mut listing = self
            .stream
            .info_with_subjects(ALL_SUBJECTS)
            .await
            .map_err(|e| stream_error(&self.name, e))?;
        while let Some((subject, _count)) = listing
            .try_next()
            .await
            .map_err(|e| stream_error(&self.name, e))?
        {
            subjects.push(subject);
        }
        let mut out = Vec::with_capacity(subjects.len());
        for subject in subjects {
            if let Some(payload) = self.last(&subject).await? {
                out.push((subject, payload));
            }
        }
        Ok(out)
    }
}
