//! `--mode remote-join`: how long a user of one server takes to join a room
//! another server holds whose state has many members (issue 18). `--url
//! JOINER,HOLDER`: on the holder, `rooms` rooms of `users` members each
//! (the state a join must fetch, check and store); on the joiner, one new
//! user per room joins it through the holder (`server_name=`), each a
//! first join of the joiner's server to that room. Then the joiner's first
//! `/sync`, which shows the room's whole state.

use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::api::Api;
use crate::setup;
use crate::stats::Summary;

pub struct RemoteJoinConfig {
    pub url: String,
    pub users: usize,
    pub rooms: usize,
    pub prefix: String,
}

#[derive(Serialize)]
struct RemoteJoinReport {
    mode: &'static str,
    ok: bool,
    members: usize,
    rooms: usize,
    /// Per room: from `POST /join` to its answer.
    join_ms: Summary,
    /// Per room: the joiner's first `/sync` after the join.
    first_sync_ms: Summary,
    setup_s: f64,
}

pub async fn run(cfg: &RemoteJoinConfig, json: Option<&std::path::Path>) -> anyhow::Result<bool> {
    let Some((joiner_url, holder_url)) = cfg.url.split_once(',') else {
        bail!("--mode remote-join needs --url JOINER,HOLDER");
    };
    if cfg.users < 1 || cfg.rooms < 1 {
        bail!("remote-join needs --users >= 1 and --rooms >= 1");
    }
    let holder = Api::new(holder_url, 64)?;
    let joiner = Api::new(joiner_url, 16)?;

    let t = Instant::now();
    let members = setup::register_users(&holder, &cfg.prefix, cfg.users, true).await?;
    let mut rooms = Vec::with_capacity(cfg.rooms);
    for r in 0..cfg.rooms {
        let owner = &members[r % members.len()].1;
        let room_id = holder.create_room(owner).await?;
        let others: Vec<String> = members
            .iter()
            .filter(|(_, token)| token != owner)
            .map(|(_, token)| token.clone())
            .collect();
        setup::join_all(&holder, &room_id, &others, true).await?;
        rooms.push(room_id);
    }
    let joiners =
        setup::register_users(&joiner, &format!("{}-j", cfg.prefix), cfg.rooms, false).await?;
    let setup_s = t.elapsed().as_secs_f64();
    println!(
        "setup:    {} rooms of {} members on the holder in {setup_s:.1} s",
        cfg.rooms, cfg.users
    );

    let mut join_us: Vec<u64> = Vec::with_capacity(cfg.rooms);
    let mut sync_us: Vec<u64> = Vec::with_capacity(cfg.rooms);
    for (room_id, (_, token)) in rooms.iter().zip(&joiners) {
        let server = room_id
            .split_once(':')
            .map(|(_, server)| server)
            .context("a room id with a server name")?;
        let t = Instant::now();
        joiner.join_via(token, room_id, server).await?;
        let joined = t.elapsed();
        join_us.push(joined.as_micros() as u64);
        let t = Instant::now();
        let (sync, _) = joiner.sync(token, None, 0, None).await?;
        let synced = t.elapsed();
        sync_us.push(synced.as_micros() as u64);
        let state = sync["rooms"]["join"][room_id.as_str()]["state"]["events"]
            .as_array()
            .map_or(0, Vec::len);
        println!(
            "join:     {room_id}: {:.0} ms, first sync {:.0} ms ({state} state events)",
            joined.as_secs_f64() * 1000.0,
            synced.as_secs_f64() * 1000.0
        );
    }
    let report = RemoteJoinReport {
        mode: "remote-join",
        ok: true,
        members: cfg.users,
        rooms: cfg.rooms,
        join_ms: Summary::from_micros(join_us),
        first_sync_ms: Summary::from_micros(sync_us),
        setup_s,
    };
    println!(
        "joins:    p50 {:.0} ms, max {:.0} ms; first syncs p50 {:.0} ms, max {:.0} ms",
        report.join_ms.p50, report.join_ms.max, report.first_sync_ms.p50, report.first_sync_ms.max
    );
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report.ok)
}
