//! Before the load: register the users, create the rooms and join members.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::Api;

const PASSWORD: &str = "tern-bench-password";

/// Registrations run a password hash on the server, which is deliberately
/// slow; a few at a time keep setup quick without queueing hundreds of hashes.
const SETUP_PARALLELISM: usize = 8;

/// Joins to one big room: no password hashing, so more at once than
/// registrations, but each one changes the same room's state.
pub const JOIN_PARALLELISM: usize = 16;

/// With progress on, how often to print it: registering a thousand users
/// takes minutes at the server's hashing pace, and silence looks like a hang.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
    /// Index into `World::rooms` of the one room this user is in.
    pub room: usize,
}

#[derive(Debug, Clone)]
pub struct Room {
    pub room_id: String,
    /// Indices into `World::users`.
    pub members: Vec<usize>,
}

/// Every user and room of one run.
#[derive(Debug, Clone)]
pub struct World {
    pub users: Vec<User>,
    pub rooms: Vec<Room>,
}

/// Splits users 0..n into rooms of `room_size` consecutive users. A last room
/// of a single user would have nobody to deliver to, so that user joins the
/// room before it instead.
pub fn room_layout(users: usize, room_size: usize) -> Vec<Vec<usize>> {
    let mut rooms: Vec<Vec<usize>> = (0..users)
        .collect::<Vec<_>>()
        .chunks(room_size)
        .map(<[usize]>::to_vec)
        .collect();
    if rooms.len() > 1 && rooms.last().is_some_and(|r| r.len() == 1) {
        let lone = rooms.pop().unwrap();
        rooms.last_mut().unwrap().extend(lone);
    }
    rooms
}

/// Registers `users` accounts named `<prefix>-u<i>`, then creates the rooms:
/// the first member of each room creates it, the others join.
pub async fn build_world(
    api: &Api,
    prefix: &str,
    users: usize,
    room_size: usize,
) -> anyhow::Result<World> {
    let limit = Arc::new(Semaphore::new(SETUP_PARALLELISM));
    let registered = register_users(api, prefix, users, false).await?;

    // Create one room per group, then join the other members.
    let layout = room_layout(users, room_size);
    let mut tasks = JoinSet::new();
    for (r, members) in layout.iter().enumerate() {
        let (api, limit) = (api.clone(), limit.clone());
        let tokens: Vec<String> = members.iter().map(|&m| registered[m].1.clone()).collect();
        tasks.spawn(async move {
            let room_id = {
                let _permit = limit.acquire().await?;
                api.create_room(&tokens[0]).await?
            };
            for token in &tokens[1..] {
                let _permit = limit.acquire().await?;
                api.join(token, &room_id)
                    .await
                    .with_context(|| format!("joining {room_id}"))?;
            }
            anyhow::Ok((r, room_id))
        });
    }
    let mut room_ids = vec![String::new(); layout.len()];
    while let Some(res) = tasks.join_next().await {
        let (r, room_id) = res??;
        room_ids[r] = room_id;
    }

    let rooms: Vec<Room> = layout
        .into_iter()
        .zip(room_ids)
        .map(|(members, room_id)| Room { room_id, members })
        .collect();
    let mut users_out: Vec<User> = registered
        .into_iter()
        .map(|(user_id, token)| User {
            user_id,
            token,
            room: 0,
        })
        .collect();
    for (r, room) in rooms.iter().enumerate() {
        for &m in &room.members {
            users_out[m].room = r;
        }
    }
    Ok(World {
        users: users_out,
        rooms,
    })
}

/// Registers `users` accounts named `<prefix>-u<i>`, a few at a time;
/// returns (user_id, access_token) in index order.
pub async fn register_users(
    api: &Api,
    prefix: &str,
    users: usize,
    progress: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let limit = Arc::new(Semaphore::new(SETUP_PARALLELISM));
    let mut tasks = JoinSet::new();
    for i in 0..users {
        let (api, limit) = (api.clone(), limit.clone());
        let name = format!("{prefix}-u{i}");
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let (user_id, token) = api
                .register(&name, PASSWORD)
                .await
                .with_context(|| format!("registering {name}"))?;
            anyhow::Ok((i, user_id, token))
        });
    }
    let mut registered = vec![None; users];
    let mut progress = progress.then(|| Progress::new("registered", users));
    while let Some(res) = tasks.join_next().await {
        let (i, user_id, token) = res??;
        registered[i] = Some((user_id, token));
        if let Some(p) = &mut progress {
            p.step();
        }
    }
    Ok(registered.into_iter().map(Option::unwrap).collect())
}

/// Joins every token's user to `room_id`, `JOIN_PARALLELISM` at a time.
pub async fn join_all(
    api: &Api,
    room_id: &str,
    tokens: &[String],
    progress: bool,
) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(JOIN_PARALLELISM));
    let mut tasks = JoinSet::new();
    for token in tokens {
        let (api, limit) = (api.clone(), limit.clone());
        let (token, room_id) = (token.clone(), room_id.to_string());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            api.join(&token, &room_id)
                .await
                .with_context(|| format!("joining {room_id}"))
        });
    }
    let mut progress = progress.then(|| Progress::new("joined", tokens.len()));
    while let Some(res) = tasks.join_next().await {
        res??;
        if let Some(p) = &mut progress {
            p.step();
        }
    }
    Ok(())
}

/// Prints "<what> i/n" every `PROGRESS_EVERY` and once at the end.
pub struct Progress {
    what: &'static str,
    total: usize,
    done: usize,
    start: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Self {
        let now = Instant::now();
        Self {
            what,
            total,
            done: 0,
            start: now,
            last: now,
        }
    }

    pub fn step(&mut self) {
        self.done += 1;
        let done = self.done;
        if done == self.total || self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            println!(
                "setup: {} {done}/{} in {:.1} s",
                self.what,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::room_layout;

    #[test]
    fn layouts() {
        assert_eq!(room_layout(8, 8), vec![(0..8).collect::<Vec<_>>()]);
        assert_eq!(room_layout(4, 2), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(room_layout(5, 2), vec![vec![0, 1], vec![2, 3, 4]]);
        assert_eq!(room_layout(7, 3), vec![vec![0, 1, 2], vec![3, 4, 5, 6]]);
        assert_eq!(room_layout(3, 10), vec![vec![0, 1, 2]]);
    }
}
