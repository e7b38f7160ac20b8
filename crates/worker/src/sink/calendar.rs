//! Which ClickHouse day an event falls in: `toDate(event_time)` on the
//! server, in the server's time zone. Rows of one insert must share their
//! partition (retention class × day), so the sink must draw day lines where
//! ClickHouse draws them.

use clickhouse_client::Client;

use crate::Error;

/// Day spans remembered when the server is not on UTC (events are at most
/// the edge's age limit old, so a few days are in use at a time).
const MAX_SPANS: usize = 64;

/// Time zones where a day is `seconds / 86400`.
const UTC_NAMES: &[&str] = &[
    "UTC",
    "Etc/UTC",
    "Etc/GMT",
    "GMT",
    "Etc/Universal",
    "Universal",
    "Zulu",
    "Etc/Zulu",
    "Etc/GMT0",
    "Etc/GMT+0",
    "Etc/GMT-0",
    "Etc/Greenwich",
    "Greenwich",
    "UCT",
    "Etc/UCT",
];

/// The server's day lines, asked once (the time zone) and, off UTC, once
/// per day seen.
#[derive(Debug, Default)]
pub(super) struct Calendar {
    /// `None` until the server's time zone was read.
    utc: Option<bool>,
    /// `(start, end, day)`: seconds `start..end` are ClickHouse day `day`.
    spans: Vec<(u32, u32, u16)>,
}

impl Calendar {
    /// The ClickHouse day (days since 1970-01-01) of `secs`.
    pub(super) fn day(&mut self, ch: &Client, secs: u32) -> Result<u16, Error> {
        let utc = match self.utc {
            Some(u) => u,
            None => {
                let tz = ch.query("SELECT timezone() FORMAT TabSeparated")?;
                let u = UTC_NAMES.contains(&tz.trim());
                self.utc = Some(u);
                u
            }
        };
        if utc {
            return Ok(u16::try_from(secs / 86_400).unwrap_or(u16::MAX));
        }
        if let Some(&(_, _, d)) = self.spans.iter().find(|(s, e, _)| (*s..*e).contains(&secs)) {
            return Ok(d);
        }
        let answer = ch.query(&format!(
            "SELECT toUInt16(toDate(toDateTime({secs}))), toUInt32(toDateTime(toDate(toDateTime({secs})))), \
             toUInt32(toDateTime(toDate(toDateTime({secs})) + 1)) FORMAT TabSeparated"
        ))?;
        let mut f = answer.trim().split('\t').map(str::parse::<u64>);
        let (Some(Ok(d)), Some(Ok(s)), Some(Ok(e))) = (f.next(), f.next(), f.next()) else {
            return Err(Error::ClickHouse(clickhouse_client::Error::Protocol(
                format!("day lines: {answer:?}"),
            )));
        };
        let (d, s, e) = (
            u16::try_from(d).unwrap_or(u16::MAX),
            u32::try_from(s).unwrap_or(0),
            u32::try_from(e).unwrap_or(u32::MAX),
        );
        if self.spans.len() >= MAX_SPANS {
            self.spans.remove(0);
        }
        self.spans.push((s, e, d));
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn on_utc_a_day_is_arithmetic_and_asks_nothing_more() {
        let mut c = Calendar {
            utc: Some(true),
            spans: Vec::new(),
        };
        // No server at this address: nothing is asked.
        let ch = Client::new("http://127.0.0.1:1", Duration::from_millis(100));
        assert_eq!(c.day(&ch, 0).unwrap(), 0);
        assert_eq!(c.day(&ch, 86_399).unwrap(), 0);
        assert_eq!(c.day(&ch, 86_400).unwrap(), 1);
        assert_eq!(c.day(&ch, 1_796_083_200).unwrap(), 20_788);
        let mut off = Calendar {
            utc: Some(false),
            spans: vec![(100, 200, 5)],
        };
        assert_eq!(off.day(&ch, 150).unwrap(), 5);
        assert!(off.day(&ch, 250).is_err(), "asks the server for a new day");
    }
}
