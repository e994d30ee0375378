fn main() {
    std::process::exit(corral::cli::main());
}
