//! Rebuilds the binary when the files it embeds change (`api/static_files.rs`):
//! cargo watches these folders recursively, new files included.
fn main() {
    println!("cargo:rerun-if-changed=../web-client/dist");
    println!("cargo:rerun-if-changed=../api-spec");
}
