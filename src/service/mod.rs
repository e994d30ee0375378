//! Use cases of `corral serve`, over the runtime. For now: the launcher, which forks
//! containers on behalf of the (multi-threaded) service.

pub mod launcher;
