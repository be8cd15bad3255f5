//! `wasm-chord chat`: an interactive conversation through the model's chat template, streamed.
//!
//! Every turn renders the whole conversation; the session's cache keeps the shared prefix, so
//! only the new user message (and any re-tokenized tail) is evaluated.

use std::io::{BufRead, Write};

use anyhow::Result;
use wasm_chord_runtime::generate::{GenerateRequest, StopReason};
use wasm_chord_runtime::session::ChatMessage;

use super::run::{max_tokens, timings_line, ModelArgs, SamplingArgs};

/// Chat with a model interactively (Ctrl-C stops a reply, /reset forgets the conversation,
/// /exit or end of input quits).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System message
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per reply (-1 = until end of turn or a full context)
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Print timings after each reply
    #[arg(long)]
    pub timings: bool,
}

pub fn run(args: Args) -> Result<()> {
    let engine = args.model.load()?;
    let n_ctx = args.model.n_ctx(&engine);
    let mut session = engine.new_session(n_ctx)?;
    let sampling = args.sampling.params(n_ctx);
    let fresh = || -> Vec<ChatMessage> {
        args.system.iter().map(|s| ChatMessage { role: "system".into(), content: s.clone() }).collect()
    };
    let mut messages = fresh();
    let cancel = interrupt::install();

    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let stdout = std::io::stdout();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next() else { break };
        let line = line?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = fresh();
                session.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage { role: "user".into(), content: line });
        let text = engine.render_chat(&messages, true)?;
        let prompt = engine.tokenize(&text, true, true)?;
        if prompt.len() >= n_ctx {
            eprintln!("(the conversation no longer fits the {n_ctx}-token context; /reset to start over)");
            messages.pop();
            continue;
        }
        let request = GenerateRequest {
            prompt,
            max_tokens: max_tokens(args.n_predict, n_ctx),
            sampling: sampling.clone(),
            stop: args.sampling.stop.clone(),
            ignore_eos: args.sampling.ignore_eos,
            cancel: Some(cancel.clone()),
            logits: false,
            ..GenerateRequest::default()
        };
        let mut out = stdout.lock();
        interrupt::set_generating(true);
        let result = session.generate(&request, |step| {
            // A closed stdout ends the chat at the next read; nothing useful to do here.
            let _ = out.write_all(step.text.as_bytes());
            let _ = out.flush();
        });
        interrupt::set_generating(false);
        cancel.reset();
        let result = result?;
        writeln!(out)?;
        if result.stop_reason == StopReason::ContextFull {
            eprintln!("(context full; /reset to start over)");
        }
        if args.timings {
            eprintln!("{}", timings_line(&result.timings));
        }
        messages.push(ChatMessage { role: "assistant".into(), content: result.text });
    }
    Ok(())
}

/// Ctrl-C while a reply streams cancels the reply; at the prompt it quits, as usual.
#[cfg(unix)]
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};

    use wasm_chord_runtime::generate::CancelHandle;

    static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    static GENERATING: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_sigint(_: libc::c_int) {
        // Only atomics and _exit here: both are async-signal-safe.
        match CANCEL.get() {
            Some(flag) if GENERATING.load(Ordering::SeqCst) => flag.store(true, Ordering::SeqCst),
            _ => unsafe { libc::_exit(130) },
        }
    }

    pub fn install() -> CancelHandle {
        let flag = CANCEL.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
        let handler = on_sigint as extern "C" fn(libc::c_int);
        // SAFETY: the handler only touches atomics and calls _exit.
        unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
        CancelHandle::from(flag)
    }

    pub fn set_generating(on: bool) {
        GENERATING.store(on, Ordering::SeqCst);
    }
}

#[cfg(not(unix))]
mod interrupt {
    use wasm_chord_runtime::generate::CancelHandle;

    pub fn install() -> CancelHandle {
        CancelHandle::new()
    }

    pub fn set_generating(_: bool) {}
}
