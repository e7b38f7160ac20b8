//! Cluster mode: the shards and replicas `[clickhouse]` lists, checked
//! against what the cluster itself says.
//!
//! `system.clusters` on 18.16 names each replica by host and native TCP
//! port only, so the engine cannot find the replicas' HTTP interfaces by
//! itself: the configuration lists them (`[[clickhouse.shards]] replicas =
//! [URL, …]`, in `shard_num` order). Hosts alone do not tell replicas
//! apart either (every one is `127.0.0.1` in tests), so each listed replica
//! is asked who it is:
//!
//! - which shard of the cluster is local to it (`system.clusters` with
//!   `is_local`: on 18.16 the flag is the shard's, set on each of its
//!   replicas), which must be the shard it is listed under;
//! - its `{shard}` and `{replica}` macros (`system.macros`), which the
//!   replicated tables' ZooKeeper paths are made of: the same `{shard}`
//!   within a listed shard, a different one across shards, and a different
//!   `{replica}` for each replica of a shard.
//!
//! The shard count and each shard's replica count must match
//! `system.clusters`. [`Topology::differences`] names every disagreement;
//! the engine refuses to start on any. A replica that does not answer is
//! not a disagreement (replicas go down): it is reported, and checked again
//! before it is written to.

use std::fmt::Write as _;
use std::time::Duration;

use engine_core::config::ClickhouseConfig;

use crate::receipts::quote;
use crate::transport::Client;
use crate::Error;

/// Most bytes of a server's answer (a macro, an error) quoted in a message.
const SHOWN_BYTES: usize = 120;

/// What one listed replica says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's shards local to it (`shard_num`s; one, if it belongs).
    pub local_shards: Vec<u32>,
    /// Its `{shard}` macro, if it has one.
    pub shard_macro: Option<String>,
    /// Its `{replica}` macro, if it has one.
    pub replica_macro: Option<String>,
}

/// One listed replica and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedReplica {
    pub url: String,
    /// Who it is, or why it could not be asked.
    pub seen: Result<Identity, String>,
}

/// The listed shards and replicas beside the cluster's own layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub cluster: String,
    /// Per `shard_num` (1, 2, …), its replica count in `system.clusters`.
    pub layout: Vec<(u32, u32)>,
    /// Per listed shard, its replicas.
    pub shards: Vec<Vec<ListedReplica>>,
}

/// The cluster's layout: per shard number, its replica count.
pub fn layout_sql(cluster: &str) -> String {
    format!(
        "SELECT shard_num, count() FROM system.clusters WHERE cluster = {} \
         GROUP BY shard_num ORDER BY shard_num FORMAT TabSeparated",
        quote(cluster)
    )
}

/// Which of the cluster's shards are local to the server asked.
pub fn local_shards_sql(cluster: &str) -> String {
    format!(
        "SELECT DISTINCT shard_num FROM system.clusters WHERE cluster = {} AND is_local \
         ORDER BY shard_num FORMAT TabSeparated",
        quote(cluster)
    )
}

/// The server's `{shard}` and `{replica}` macros.
pub const MACROS_SQL: &str =
    "SELECT macro, substitution FROM system.macros WHERE macro IN ('shard', 'replica') FORMAT TabSeparated";

fn numbers(answer: &str) -> Result<Vec<u32>, Error> {
    answer
        .lines()
        .map(|l| {
            l.split('\t')
                .next()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    Error::Protocol(format!(
                        "system.clusters: {:?}",
                        engine_text::shown(l, SHOWN_BYTES)
                    ))
                })
        })
        .collect()
}

/// The cluster's layout as `system.clusters` on `client`'s server says.
pub fn layout(client: &Client, cluster: &str) -> Result<Vec<(u32, u32)>, Error> {
    let answer = client.query(&layout_sql(cluster))?;
    answer
        .lines()
        .map(|l| {
            let mut f = l.split('\t').map(|v| v.trim().parse::<u32>());
            match (f.next(), f.next()) {
                (Some(Ok(s)), Some(Ok(n))) => Ok((s, n)),
                _ => Err(Error::Protocol(format!(
                    "system.clusters: {:?}",
                    engine_text::shown(l, SHOWN_BYTES)
                ))),
            }
        })
        .collect()
}

/// Who the server behind `client` is in `cluster`.
pub fn identity(client: &Client, cluster: &str) -> Result<Identity, Error> {
    let local_shards = numbers(&client.query(&local_shards_sql(cluster))?)?;
    let (mut shard_macro, mut replica_macro) = (None, None);
    for line in client.query(MACROS_SQL)?.lines() {
        let Some((macro_name, value)) = line.split_once('\t') else {
            continue;
        };
        let value = engine_text::shown(value, SHOWN_BYTES).into_owned();
        match macro_name {
            "shard" => shard_macro = Some(value),
            "replica" => replica_macro = Some(value),
            _ => {}
        }
    }
    Ok(Identity {
        local_shards,
        shard_macro,
        replica_macro,
    })
}

impl Topology {
    /// Asks the cluster (through `config.url`) and every listed replica.
    /// Fails only if `config.url` cannot say what the cluster is; a listed
    /// replica that does not answer is recorded as such.
    pub fn discover(config: &ClickhouseConfig, timeout: Duration) -> Result<Topology, Error> {
        let client_for = |url: &str| Client::for_node(config, url, timeout);
        let layout = layout(&client_for(config.url.as_str()), &config.cluster)?;
        let shards = config
            .shards
            .iter()
            .map(|s| {
                s.replicas
                    .iter()
                    .map(|url| ListedReplica {
                        url: url.to_string(),
                        seen: identity(&client_for(url.as_str()), &config.cluster).map_err(|e| {
                            engine_text::shown(&e.to_string(), SHOWN_BYTES).into_owned()
                        }),
                    })
                    .collect()
            })
            .collect();
        Ok(Topology {
            cluster: config.cluster.clone(),
            layout,
            shards,
        })
    }

    /// Every way the listed shards disagree with the cluster, each naming
    /// the key and what the cluster says; empty if they agree.
    pub fn differences(&self) -> Vec<String> {
        let mut out = Vec::new();
        let cluster = &self.cluster;
        if self.layout.is_empty() {
            out.push(format!(
                "cluster `{cluster}` is not in system.clusters of clickhouse.url (its <remote_servers>)"
            ));
            return out;
        }
        if self.layout.len() != self.shards.len() {
            out.push(format!(
                "clickhouse.shards lists {} shards; cluster `{cluster}` has {} (system.clusters)",
                self.shards.len(),
                self.layout.len()
            ));
        }
        let mut shard_macros: Vec<(usize, &str)> = Vec::new();
        for (i, replicas) in self.shards.iter().enumerate() {
            let num = i as u32 + 1;
            let key = format!("clickhouse.shards[{i}]");
            match self.layout.iter().find(|(s, _)| *s == num) {
                Some(&(_, n)) if n as usize != replicas.len() => out.push(format!(
                    "{key} lists {} replicas; shard {num} of `{cluster}` has {n} (system.clusters)",
                    replicas.len()
                )),
                Some(_) => {}
                None if self.layout.len() == self.shards.len() => out.push(format!(
                    "{key}: `{cluster}` has no shard_num {num} (system.clusters)"
                )),
                None => {}
            }
            let mut replica_macros: Vec<(usize, &str)> = Vec::new();
            let mut shard_macro: Option<&str> = None;
            for (j, r) in replicas.iter().enumerate() {
                let who = format!("{key}.replicas[{j}] ({})", r.url);
                let Ok(id) = &r.seen else { continue };
                match id.local_shards[..] {
                    [s] if s == num => {}
                    [] => out.push(format!("{who} is not a node of cluster `{cluster}`")),
                    [s] => out.push(format!(
                        "{who} is shard {s} of `{cluster}` (system.clusters, is_local), listed as shard {num}"
                    )),
                    ref many => out.push(format!(
                        "{who} is local to shards {many:?} of `{cluster}`: one server per replica"
                    )),
                }
                match (&id.shard_macro, &id.replica_macro) {
                    (Some(s), Some(rm)) => {
                        match shard_macro {
                            None => shard_macro = Some(s),
                            Some(first) if first != s => out.push(format!(
                                "{who} has {{shard}} = {s:?}, another replica of the same listed shard {first:?}"
                            )),
                            Some(_) => {}
                        }
                        if let Some((k, _)) = replica_macros.iter().find(|(_, m)| *m == rm) {
                            out.push(format!(
                                "{who} has {{replica}} = {rm:?}, as {key}.replicas[{k}]: the same replica listed twice, or two with one name"
                            ));
                        }
                        replica_macros.push((j, rm));
                    }
                    _ => out.push(format!(
                        "{who} lacks the {{shard}} or {{replica}} macro (system.macros) the replicated tables need"
                    )),
                }
            }
            if let Some(m) = shard_macro {
                if let Some((k, _)) = shard_macros.iter().find(|(_, s)| *s == m) {
                    out.push(format!(
                        "{key} has {{shard}} = {m:?}, as clickhouse.shards[{k}]: two shards would share their tables"
                    ));
                }
                shard_macros.push((i, m));
            }
        }
        out
    }

    /// The listed replicas that did not answer, with why.
    pub fn unreachable(&self) -> Vec<(&str, &str)> {
        self.shards
            .iter()
            .flatten()
            .filter_map(|r| r.seen.as_ref().err().map(|e| (r.url.as_str(), e.as_str())))
            .collect()
    }

    /// Fails with every difference, if there is one.
    pub fn check(&self) -> Result<(), Error> {
        let differences = self.differences();
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::Topology {
                cluster: self.cluster.clone(),
                differences,
            })
        }
    }

    /// The topology as `check-config` prints it (TOML comments).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# cluster {}: {} shards in system.clusters",
            self.cluster,
            self.layout.len()
        );
        for (i, replicas) in self.shards.iter().enumerate() {
            let _ = writeln!(out, "#   shard {}:", i + 1);
            for r in replicas {
                let state = match &r.seen {
                    Ok(id) => format!(
                        "shard_num {:?}, {{shard}} {}, {{replica}} {}",
                        id.local_shards,
                        id.shard_macro.as_deref().unwrap_or("-"),
                        id.replica_macro.as_deref().unwrap_or("-")
                    ),
                    Err(e) => format!("not answering: {e}"),
                };
                let _ = writeln!(out, "#     {}: {state}", r.url);
            }
        }
        for d in self.differences() {
            let _ = writeln!(out, "# DISAGREES: {d}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(url: &str, shards: &[u32], s: &str, r: &str) -> ListedReplica {
        ListedReplica {
            url: url.into(),
            seen: Ok(Identity {
                local_shards: shards.to_vec(),
                shard_macro: Some(s.into()),
                replica_macro: Some(r.into()),
            }),
        }
    }

    fn two_by_two() -> Topology {
        Topology {
            cluster: "acc".into(),
            layout: vec![(1, 2), (2, 2)],
            shards: vec![
                vec![
                    replica("a", &[1], "01", "r1"),
                    replica("b", &[1], "01", "r2"),
                ],
                vec![
                    replica("c", &[2], "02", "r1"),
                    replica("d", &[2], "02", "r2"),
                ],
            ],
        }
    }

    #[test]
    fn a_matching_listing_agrees() {
        let t = two_by_two();
        assert_eq!(t.differences(), Vec::<String>::new());
        assert!(t.check().is_ok());
        assert!(t
            .render()
            .contains("#     c: shard_num [2], {shard} 02, {replica} r1"));
    }

    #[test]
    fn each_disagreement_is_named() {
        type Change = fn(&mut Topology);
        let cases: Vec<(Change, &str)> = vec![
            (|t| t.layout.clear(), "is not in system.clusters"),
            (
                |t| {
                    t.shards.pop();
                },
                "lists 1 shards; cluster `acc` has 2",
            ),
            (
                |t| {
                    t.shards[1].pop();
                },
                "clickhouse.shards[1] lists 1 replicas; shard 2 of `acc` has 2",
            ),
            (
                |t| t.shards.swap(0, 1),
                "is shard 2 of `acc` (system.clusters, is_local), listed as shard 1",
            ),
            (
                |t| t.shards[0][1] = replica("b", &[], "01", "r2"),
                "clickhouse.shards[0].replicas[1] (b) is not a node",
            ),
            (
                |t| t.shards[0][1] = replica("b", &[1], "01", "r1"),
                "the same replica listed twice",
            ),
            (
                |t| t.shards[0][1] = replica("b", &[1], "03", "r2"),
                "another replica of the same listed shard",
            ),
            (
                |t| {
                    t.shards[1][0] = replica("c", &[2], "01", "r1");
                    t.shards[1][1] = replica("d", &[2], "01", "r2");
                },
                "two shards would share their tables",
            ),
            (
                |t| {
                    if let Ok(id) = &mut t.shards[0][0].seen {
                        id.replica_macro = None;
                    }
                },
                "lacks the {shard} or {replica} macro",
            ),
        ];
        for (change, says) in cases {
            let mut t = two_by_two();
            change(&mut t);
            let d = t.differences();
            assert!(d.iter().any(|m| m.contains(says)), "{says}: {d:?}");
            assert!(matches!(t.check(), Err(Error::Topology { .. })));
        }
    }

    #[test]
    fn a_replica_that_does_not_answer_is_not_a_disagreement() {
        let mut t = two_by_two();
        t.shards[0][1].seen = Err("connection refused".into());
        assert!(t.differences().is_empty());
        assert_eq!(t.unreachable(), vec![("b", "connection refused")]);
        assert!(t
            .render()
            .contains("#     b: not answering: connection refused"));
    }
}
