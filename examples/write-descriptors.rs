//! Writes the crate's protobuf descriptor set (every file of `proto/`, as
//! `build.rs` compiled it) to the path given, for tools that build message
//! types at run time (the web benchmark's Node client).
//!
//! ```text
//! cargo run --example write-descriptors -- /tmp/chat.desc
//! ```

fn main() -> std::io::Result<()> {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: write-descriptors <path>");
        std::process::exit(2);
    };
    std::fs::write(path, grpc_chat::pb::FILE_DESCRIPTOR_SET)
}
