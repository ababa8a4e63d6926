//! Who is in which room in `--mode chat`, and the deterministic "random"
//! choices the load makes.

use crate::setup::room_layout;

/// Rooms of `room_size` members such that every user is in `rooms_per_user`
/// of them: round `r` permutes the users with `i -> (i * m_r + r) mod n`
/// (`m_r` coprime to `n`, so a bijection) and cuts the permutation into
/// rooms as `room_layout` does. Each round puts every user in exactly one
/// room, with different neighbours from round to round.
pub fn chat_layout(users: usize, rooms_per_user: usize, room_size: usize) -> Vec<Vec<usize>> {
    let coprimes: Vec<usize> = (1..users.max(2)).filter(|&m| gcd(m, users) == 1).collect();
    let groups = room_layout(users, room_size);
    let mut rooms = Vec::with_capacity(groups.len() * rooms_per_user);
    for r in 0..rooms_per_user {
        let m = coprimes[r % coprimes.len()];
        for g in &groups {
            rooms.push(g.iter().map(|&i| (i * m + r) % users).collect());
        }
    }
    rooms
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A 64-bit mix (splitmix64's finaliser): deterministic "random" choices
/// without a random-number crate.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn pick(seed: u64, k: u64, salt: u64) -> u64 {
    mix(seed ^ mix(k.wrapping_mul(0x100) ^ salt))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(users: usize, per_user: usize, size: usize) {
        let rooms = chat_layout(users, per_user, size);
        assert_eq!(rooms.len(), per_user * room_layout(users, size).len());
        let mut count = vec![0; users];
        for room in &rooms {
            let mut m = room.clone();
            m.sort_unstable();
            m.dedup();
            assert_eq!(m.len(), room.len(), "duplicate member in {room:?}");
            assert!(room.len() >= 2);
            for &u in room {
                count[u] += 1;
            }
        }
        assert!(count.iter().all(|&c| c == per_user), "{count:?}");
    }

    #[test]
    fn every_user_in_rooms_per_user_rooms() {
        check(12, 3, 4);
        check(1000, 20, 10);
        check(7, 5, 3);
        check(2, 3, 2);
    }

    #[test]
    fn picks_spread() {
        let odd = (0..1000).filter(|&k| pick(42, k, 3) & 1 == 1).count();
        assert!((400..600).contains(&odd), "{odd}");
    }
}
