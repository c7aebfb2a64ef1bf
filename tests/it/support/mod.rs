#![allow(dead_code)]

pub mod idp;
