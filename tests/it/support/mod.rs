#![allow(dead_code)]

pub mod idp;
pub mod redis;
