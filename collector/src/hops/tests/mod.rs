//! Hop assembly driven by synthetic event sequences.

mod fixtures;

mod bounds;
mod decoded;
mod keepalive;
mod one_sided;
mod ordering;
mod pairing;
mod roles;
mod ttrpc;
