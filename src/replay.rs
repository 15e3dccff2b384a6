//! `cerberus-agent replay-dead-letters`: sends the events of the dead-letter
//! file again, once the backend that refused them was fixed.
//!
//! The file is moved aside first ([`DeadLetters::take`]), so that a running
//! agent's new dead letters go to a new file. The events go out through the
//! same [`Sender`] as the agent's, with the token and client id in force
//! now; an event refused again goes back to the dead-letter file, and what
//! was not acknowledged within the time stays in the moved file for the
//! next replay.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, Settings};
use crate::deliver::AckPoint;
use crate::deliver::backend::batch::BatchBuilder;
use crate::deliver::backend::dead_letter::{self, DeadLetters};
use crate::deliver::backend::{Sender, SenderStats};
use crate::plan::{self, Delivery};
use crate::wake::Wakes;

/// Sends the dead letters again; waits at most `timeout` for the backend.
/// Exit status 0 when every one was acknowledged.
pub fn replay(settings: &Settings, timeout: Duration) -> anyhow::Result<ExitCode> {
    let Delivery::Backend { sender, batches } = plan::delivery(settings)? else {
        return Err(ConfigError::new(
            "replay-dead-letters sends to the backend: set ws_url (or --ws-url)",
        )
        .into());
    };
    let letters =
        sender.refusals.dead_letters.clone().unwrap_or_else(|| {
            DeadLetters::new(&settings.state_dir, settings.dead_letter_max_bytes)
        });
    let files = letters.take()?;
    let Some(file) = files.first() else {
        println!("no dead letters in {}", letters.path().display());
        return Ok(ExitCode::SUCCESS);
    };
    let records = dead_letter::read(file)?;
    let token = sender.token.as_ref().map(|t| t.expose().to_owned());
    let client_id = sender.client_id.clone();
    let mut builder = BatchBuilder::new(batches);
    let mut batches_out = VecDeque::new();
    for (i, record) in records.iter().enumerate() {
        let event = dead_letter::event_with_credentials(
            &record.event,
            token.as_deref(),
            client_id.as_deref(),
        );
        let origin = AckPoint {
            source: 0,
            part: 0,
            end: i as u64 + 1,
        };
        batches_out.extend(builder.push(&event, origin));
    }
    batches_out.extend(builder.close_if_due(Instant::now(), true));

    let wakes = Wakes::new();
    let stats = Arc::new(SenderStats::default());
    let mut sender = Sender::spawn(*sender, wakes.waker(), stats.clone())?;
    let give_up = Instant::now() + timeout;
    let mut settled = 0u64;
    let mut acks = Vec::new();
    let mut closed = false;
    while Instant::now() < give_up {
        while let Some(batch) = batches_out.pop_front() {
            if let Err(batch) = sender.offer(batch) {
                batches_out.push_front(batch);
                break;
            }
        }
        if batches_out.is_empty() && !closed {
            sender.close();
            closed = true;
        }
        sender.take_acks(&mut acks);
        settled = acks.iter().map(|o| o.end).max().unwrap_or(settled);
        if closed && sender.is_finished() {
            break;
        }
        wakes.wait(Duration::from_millis(200));
    }
    sender.take_acks(&mut acks);
    settled = acks.iter().map(|o| o.end).max().unwrap_or(settled);
    sender.abort();
    let again = stats.events_dead_lettered.load(Ordering::Relaxed);
    let left = letters.finish_replay(file, settled as usize)?;
    let delivered = settled.saturating_sub(again);
    println!(
        "{delivered} of {} dead letters delivered; {again} refused again (back in {}); {left} not acknowledged in time (kept for the next replay)",
        records.len(),
        letters.path().display()
    );
    Ok(if delivered == records.len() as u64 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
