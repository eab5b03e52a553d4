//! Fuzz target: `grpc_chat_fuzz::decoder` (see its doc comment for the input
//! layout and the properties checked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grpc_chat_fuzz::decoder(data));
