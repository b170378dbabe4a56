//! Run passes on a `.kir` or `.onnx` file and print the result and statistics — a
//! development aid until `kiln opt` exists: `cargo run -p kiln-opt --example opt_file --
//! FILE [PASS,PASS | O1]`.

use kiln_opt::{pipeline, run_pipeline, OptLevel, OptOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: opt_file FILE [PASS,PASS | O1]")?;
    let passes_arg = args.next().unwrap_or_else(|| "O1".into());
    let graph = if path.ends_with(".onnx") {
        let opts = kiln_onnx::ImportOptions {
            default_dim: Some(1),
            ..Default::default()
        };
        kiln_onnx::import_file(std::path::Path::new(&path), &opts)?
    } else {
        kiln_ir::text::parse_graph(&std::fs::read_to_string(&path)?)?
    };
    let passes: Vec<&str> = if passes_arg == "O1" {
        pipeline(OptLevel::O1)
    } else {
        passes_arg.split(',').collect()
    };
    let opts = OptOptions {
        verify: true,
        ..OptOptions::default()
    };
    let print = std::env::var("PRINT").is_ok();
    let (out, _stats) = run_pipeline(&graph, &passes, &opts, &mut |_, g, stats| {
        eprint!("{}", stats.render(true));
        if print {
            println!("{}", kiln_ir::text::print_graph(g));
        }
    })?;
    eprintln!(
        "ops: {} -> {}",
        kiln_opt::op_histogram(&graph).values().sum::<usize>(),
        kiln_opt::op_histogram(&out).values().sum::<usize>()
    );
    Ok(())
}
