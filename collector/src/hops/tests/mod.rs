//! Hop assembly driven by synthetic event sequences.

mod fixtures;

mod bounds;
mod keepalive;
mod one_sided;
mod ordering;
mod pairing;
mod roles;
