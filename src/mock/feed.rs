//! Which data a connection receives, and when: the server-wide catalog of
//! generated and replayed streams, and each connection's position in them.
//!
//! A generated stream runs on the server clock: event `n` is due at
//! `start + n / rate` for every connection, so overlapping connections see
//! the same ids. A replay file runs from its first line on each connection
//! (or on the server clock with `--replay-shared`). At `--rate max` every
//! stream is always due. The connection thread owns its [`Feed`]; nothing
//! here touches a socket.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::Bytes;

use super::generator::{Market, StreamGenerator};
use super::options::Rate;
use super::replay::ReplayFile;

/// One data frame ready to send.
#[derive(Clone, Debug)]
pub struct OutFrame {
    /// Combined frame `{"stream":..,"data":..}`.
    pub frame: Bytes,
    /// Range of the `data` value inside `frame`; a raw connection sends only
    /// these bytes.
    pub data: Range<usize>,
    /// Stream name.
    pub stream: Arc<str>,
    /// Sequence id for the sent-log, when the stream has one.
    pub id: Option<u64>,
    /// FNV-1a digest of the data bytes, or 0 when digests are not needed.
    pub digest: u64,
}

/// Streams the server can serve, shared by every connection.
#[derive(Debug)]
pub struct Catalog {
    market: Market,
    generate: bool,
    rate: Rate,
    replay_shared: bool,
    replays: Vec<ReplayFile>,
    replay_names: Vec<Vec<Arc<str>>>,
    /// Stream name to the replay files that contain it.
    replay_streams: HashMap<String, Vec<usize>>,
    origin: Instant,
    origin_ms: u64,
}

impl Catalog {
    /// Builds the catalog. `origin` and `origin_ms` are the server start, as
    /// a monotonic instant and in milliseconds since the Unix epoch.
    pub fn new(
        market: Market,
        generate: bool,
        rate: Rate,
        replay_shared: bool,
        replays: Vec<ReplayFile>,
        origin: Instant,
        origin_ms: u64,
    ) -> Catalog {
        let mut replay_streams: HashMap<String, Vec<usize>> = HashMap::new();
        let mut replay_names = Vec::with_capacity(replays.len());
        for (file_index, file) in replays.iter().enumerate() {
            for name in &file.streams {
                replay_streams.entry(name.clone()).or_default().push(file_index);
            }
            replay_names.push(file.streams.iter().map(|name| Arc::from(name.as_str())).collect());
        }
        Catalog {
            market,
            generate,
            rate,
            replay_shared,
            replays,
            replay_names,
            replay_streams,
            origin,
            origin_ms,
        }
    }
}

#[derive(Debug)]
struct GeneratedStream {
    generator: StreamGenerator,
    name: Arc<str>,
    next: u64,
}

#[derive(Debug)]
struct ReplayCursor {
    file: usize,
    /// Position over the endless sequence of passes: pass `next / len`,
    /// line `next % len`.
    next: u64,
    origin: Instant,
    wanted: Vec<bool>,
}

/// Data position of one connection.
#[derive(Debug)]
pub struct Feed {
    catalog: Arc<Catalog>,
    generated: Vec<GeneratedStream>,
    replays: Vec<ReplayCursor>,
    scratch: Vec<u8>,
}

impl Feed {
    /// Creates a feed with no stream.
    pub fn new(catalog: Arc<Catalog>) -> Feed {
        Feed { catalog, generated: Vec::new(), replays: Vec::new(), scratch: Vec::new() }
    }

    /// Sets the streams that deliver, keeping the position of streams that
    /// stay. Streams with neither a replay nor a generator stay silent.
    pub fn set_streams(&mut self, streams: &[String], now: Instant) {
        let catalog = Arc::clone(&self.catalog);
        let mut generated = Vec::new();
        let mut wanted_by_file: HashMap<usize, Vec<bool>> = HashMap::new();
        for name in streams {
            if let Some(files) = catalog.replay_streams.get(name) {
                for &file in files {
                    let wanted = wanted_by_file
                        .entry(file)
                        .or_insert_with(|| vec![false; catalog.replays[file].streams.len()]);
                    if let Some(index) =
                        catalog.replays[file].streams.iter().position(|s| s == name)
                    {
                        wanted[index] = true;
                    }
                }
                continue;
            }
            if !catalog.generate {
                continue;
            }
            if let Some(index) = self.generated.iter().position(|s| &*s.name == name.as_str()) {
                generated.push(self.generated.swap_remove(index));
            } else if let Some(generator) = StreamGenerator::new(name, catalog.market) {
                let next =
                    first_due_index(catalog.rate, now.saturating_duration_since(catalog.origin));
                generated.push(GeneratedStream { generator, name: Arc::from(name.as_str()), next });
            }
        }
        self.generated = generated;

        let mut replays = Vec::new();
        let mut files: Vec<_> = wanted_by_file.into_iter().collect();
        files.sort_by_key(|(file, _)| *file);
        for (file, wanted) in files {
            if let Some(index) = self.replays.iter().position(|cursor| cursor.file == file) {
                let mut cursor = self.replays.swap_remove(index);
                cursor.wanted = wanted;
                replays.push(cursor);
            } else if catalog.replay_shared {
                let next =
                    first_due_index(catalog.rate, now.saturating_duration_since(catalog.origin));
                replays.push(ReplayCursor { file, next, origin: catalog.origin, wanted });
            } else {
                replays.push(ReplayCursor { file, next: 0, origin: now, wanted });
            }
        }
        self.replays = replays;
    }

    /// Drops every event due before `now`, after a pause in which the
    /// connection sent no data; those events are never sent on it.
    pub fn skip_to(&mut self, now: Instant) {
        let rate = self.catalog.rate;
        let origin = self.catalog.origin;
        for stream in &mut self.generated {
            stream.next =
                stream.next.max(first_due_index(rate, now.saturating_duration_since(origin)));
        }
        for cursor in &mut self.replays {
            let due = first_due_index(rate, now.saturating_duration_since(cursor.origin));
            cursor.next = cursor.next.max(due);
        }
    }

    /// Earliest time a frame falls due, or `None` without streams. At
    /// `--rate max` that is always now.
    pub fn next_due(&self) -> Option<Instant> {
        let Rate::PerSecond(rate) = self.catalog.rate else {
            return (!self.generated.is_empty() || !self.replays.is_empty()).then(Instant::now);
        };
        let generated = self.generated.iter().map(|s| due_time(self.catalog.origin, rate, s.next));
        let replays = self.replays.iter().map(|c| due_time(c.origin, rate, c.next));
        generated.chain(replays).min()
    }

    /// Appends up to `budget` due frames to `out`, one per stream (or replay
    /// file) in turn, so streams interleave. Computes digests only when
    /// `digests` is true.
    pub fn poll(
        &mut self,
        now: Instant,
        budget: usize,
        digests: bool,
        unix_ms: u64,
        out: &mut Vec<OutFrame>,
    ) {
        let catalog = Arc::clone(&self.catalog);
        let rate = catalog.rate;
        // Generated frames are written into one buffer and cut out of it at
        // the end, so the order of both kinds is kept in `slots`.
        let mut pending: Vec<(usize, Range<usize>, Range<usize>, u64)> = Vec::new();
        let mut slots: Vec<Option<OutFrame>> = Vec::new();
        self.scratch.clear();
        let mut produced = 0;

        loop {
            let mut progressed = false;
            for (index, stream) in self.generated.iter_mut().enumerate() {
                if produced >= budget {
                    break;
                }
                let event_ms = match rate {
                    Rate::Max => unix_ms,
                    Rate::PerSecond(rate) => {
                        if due_time(catalog.origin, rate, stream.next) > now {
                            continue;
                        }
                        catalog.origin_ms + (stream.next as f64 * 1000.0 / rate) as u64
                    }
                };
                let event_ms = event_ms.saturating_sub(stream.generator.lag_ms);
                let written =
                    stream.generator.write_event(stream.next, event_ms, &mut self.scratch);
                pending.push((index, written.frame, written.data, written.id));
                slots.push(None);
                stream.next += 1;
                produced += 1;
                progressed = true;
            }
            for cursor in &mut self.replays {
                if produced >= budget {
                    break;
                }
                let file = &catalog.replays[cursor.file];
                // Skip lines of unwanted streams, at most one pass of them.
                let mut scanned = 0;
                while scanned < file.len() {
                    if let Rate::PerSecond(rate) = rate {
                        if due_time(cursor.origin, rate, cursor.next) > now {
                            break;
                        }
                    }
                    let pass = cursor.next / file.len() as u64;
                    let line = (cursor.next % file.len() as u64) as usize;
                    cursor.next += 1;
                    scanned += 1;
                    let stream = file.stream_of(line);
                    if !cursor.wanted[stream] {
                        continue;
                    }
                    let frame = file.frame(pass, line);
                    slots.push(Some(OutFrame {
                        frame: frame.frame,
                        data: frame.data,
                        stream: Arc::clone(&catalog.replay_names[cursor.file][stream]),
                        id: frame.id,
                        digest: frame.digest,
                    }));
                    produced += 1;
                    progressed = true;
                    break;
                }
            }
            if !progressed || produced >= budget {
                break;
            }
        }

        let chunk = Bytes::from(std::mem::take(&mut self.scratch));
        let mut pending = pending.into_iter();
        for slot in slots {
            if let Some(frame) = slot {
                out.push(frame);
                continue;
            }
            let Some((index, frame, data, id)) = pending.next() else { break };
            let start = frame.start;
            let frame = chunk.slice(frame);
            let data = data.start - start..data.end - start;
            let digest = if digests { crate::digest::fnv1a(&frame[data.clone()]) } else { 0 };
            out.push(OutFrame {
                frame,
                data,
                stream: Arc::clone(&self.generated[index].name),
                id: Some(id),
                digest,
            });
        }
    }
}

/// Index of the first event due at or after `elapsed` since the origin.
fn first_due_index(rate: Rate, elapsed: Duration) -> u64 {
    match rate {
        Rate::Max => 0,
        Rate::PerSecond(rate) => (elapsed.as_secs_f64() * rate).ceil() as u64,
    }
}

fn due_time(origin: Instant, rate: f64, index: u64) -> Instant {
    origin + Duration::from_secs_f64(index as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(rate: Rate) -> Arc<Catalog> {
        Arc::new(Catalog::new(
            Market::Spot,
            true,
            rate,
            false,
            Vec::new(),
            Instant::now(),
            1_000_000,
        ))
    }

    #[test]
    fn max_rate_interleaves_streams() {
        let mut feed = Feed::new(catalog(Rate::Max));
        let now = Instant::now();
        feed.set_streams(
            &["a@trade".to_string(), "b@trade".to_string(), "c@kline_1m".to_string()],
            now,
        );
        let mut out = Vec::new();
        feed.poll(now, 6, true, 5, &mut out);
        let names: Vec<&str> = out.iter().map(|frame| &*frame.stream).collect();
        assert_eq!(names, ["a@trade", "b@trade", "a@trade", "b@trade", "a@trade", "b@trade"]);
        assert_eq!(out[2].id, out[0].id.map(|id| id + 1));
        assert_eq!(out[0].digest, crate::digest::fnv1a(&out[0].frame[out[0].data.clone()]));
    }

    #[test]
    fn rate_paces_events_on_server_clock() {
        let catalog = catalog(Rate::PerSecond(100.0));
        let mut feed = Feed::new(Arc::clone(&catalog));
        let start = catalog.origin;
        feed.set_streams(&["a@trade".to_string()], start);
        let mut out = Vec::new();
        feed.poll(start + Duration::from_millis(95), 1000, false, 0, &mut out);
        assert_eq!(out.len(), 10);
        feed.skip_to(start + Duration::from_millis(1000));
        out.clear();
        feed.poll(start + Duration::from_millis(1000), 1000, false, 0, &mut out);
        assert_eq!(out.len(), 1);
    }
}
