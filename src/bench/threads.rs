//! Where a bench step's CPU went, by kind of thread. GStreamer names each streaming thread
//! after the pad that drives it (`lipsync:src`, `encoder_queue:src`, `queue12:src`), so summing
//! threads by name, numbers left out, shows which part of the sessions' pipelines costs what.

use std::collections::HashMap;
use std::time::Duration;

/// Each thread's name and CPU time (user + system), by thread id.
pub struct ThreadTimes(HashMap<u32, (String, Duration)>);

/// One kind of thread over a step: its name, CPU in cores, and how many threads had it.
#[derive(Debug, PartialEq)]
pub struct ThreadKind {
    pub name: String,
    pub cores: f64,
    pub threads: usize,
}

impl ThreadTimes {
    /// This process's threads now (empty where `/proc` cannot be read).
    pub fn now() -> Self {
        let mut times = HashMap::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                if let Some(entry) = std::fs::read_to_string(task.path().join("stat"))
                    .ok()
                    .and_then(|s| parse_stat(&s))
                {
                    times.insert(tid, entry);
                }
            }
        }
        Self(times)
    }

    /// The CPU each kind of thread used since `before`, over `wall`, most first. A thread
    /// started since counts from zero; one that ended since is not counted.
    pub fn since(&self, before: &ThreadTimes, wall: Duration) -> Vec<ThreadKind> {
        let mut kinds: HashMap<String, (Duration, usize)> = HashMap::new();
        for (tid, (name, cpu)) in &self.0 {
            let earlier = before.0.get(tid).map_or(Duration::ZERO, |(_, c)| *c);
            let kind = kinds.entry(kind_of(name)).or_default();
            kind.0 += cpu.saturating_sub(earlier);
            kind.1 += 1;
        }
        let mut kinds: Vec<ThreadKind> = kinds
            .into_iter()
            .map(|(name, (cpu, threads))| ThreadKind {
                name,
                cores: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
                threads,
            })
            .collect();
        kinds.sort_by(|a, b| b.cores.total_cmp(&a.cores).then(a.name.cmp(&b.name)));
        kinds
    }
}

/// A thread's name and user + system time from its `stat` line (the name is in parentheses and
/// may hold spaces; times are in clock ticks of 10 ms).
fn parse_stat(stat: &str) -> Option<(String, Duration)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, Duration::from_millis(ticks * 10)))
}

/// A thread's kind: its name without the numbers GStreamer gives element instances
/// (`queue12:src` and `queue7:src` are both `queue:src`; `wav2lip` stays).
fn kind_of(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut kind = String::with_capacity(name.len());
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_digit() {
            // Part of a number that ends the name or its element part?
            let end = chars[i..].iter().position(|c| !c.is_ascii_digit());
            if end.is_none_or(|e| chars[i + e] == ':') {
                continue;
            }
        }
        kind.push(c);
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_threads_name_and_cpu_time() {
        let line = "4242 (queue12:src) S 1 2 3 0 -1 4194368 5 0 0 0 150 25 0 0 20 0 1 0 7 8 9";
        assert_eq!(
            parse_stat(line),
            Some(("queue12:src".into(), Duration::from_millis(1750)))
        );
        // A name with spaces and parentheses of its own.
        let line = "7 (a (b) c) R 1 2 3 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 7 8 9";
        assert_eq!(
            parse_stat(line),
            Some(("a (b) c".into(), Duration::from_millis(70)))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn element_numbers_are_left_out_of_a_kind() {
        assert_eq!(kind_of("queue12:src"), "queue:src");
        assert_eq!(kind_of("lipsync:src"), "lipsync:src");
        assert_eq!(kind_of("wav2lip"), "wav2lip");
        assert_eq!(kind_of("x264enc0:sink"), "x264enc:sink");
        assert_eq!(kind_of("worker17"), "worker");
    }

    #[test]
    fn threads_are_summed_by_kind_over_the_step() {
        let ms = Duration::from_millis;
        let before = ThreadTimes(HashMap::from([
            (1, ("queue1:src".into(), ms(100))),
            (2, ("queue2:src".into(), ms(200))),
            (3, ("wav2lip".into(), ms(0))),
        ]));
        let after = ThreadTimes(HashMap::from([
            (1, ("queue1:src".into(), ms(600))),
            (2, ("queue2:src".into(), ms(700))),
            (3, ("wav2lip".into(), ms(500))),
            (4, ("queue3:src".into(), ms(1000))),
        ]));
        let kinds = after.since(&before, Duration::from_secs(2));
        assert_eq!(
            kinds,
            vec![
                ThreadKind {
                    name: "queue:src".into(),
                    cores: 1.0,
                    threads: 3
                },
                ThreadKind {
                    name: "wav2lip".into(),
                    cores: 0.25,
                    threads: 1
                },
            ]
        );
    }

    #[test]
    fn this_process_can_read_its_own_threads() {
        let now = ThreadTimes::now();
        assert!(!now.0.is_empty(), "no threads read from /proc/self/task");
    }
}
