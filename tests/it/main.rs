//! The integration tests: one binary, so that the whole suite shares one
//! throwaway server and one link, and its tests run side by side. Each
//! module is one subject; each test uses keys of its own, and reads only
//! its own sessions' rows of `pg_locks`.

mod api;
mod cancel_every_poll;
mod derive;
mod failure_paths;
mod faults;
mod from_name;
mod guards;
mod lease;
mod lock_object;
mod locks;
mod model;
mod pinned_sqlx;
mod poolers;
mod read_only_session;
mod round_trips;
mod seed_semantics;
mod session_functions;
mod slices;
