//! Reads a [`Vocab`] from GGUF metadata (`tokenizer.ggml.*`).

use super::{TokenizerError, Vocab};
use crate::gguf::{keys, Metadata};

fn meta_err(e: crate::gguf::GgufError) -> TokenizerError {
    TokenizerError::Metadata(e.to_string())
}

pub(super) fn read_vocab(m: &Metadata) -> Result<Vocab, TokenizerError> {
    let str_key = |key: &str| m.get_str(key).map_err(meta_err);
    let id = |key: &str| m.get_u32(key).map_err(meta_err);
    let flag = |key: &str| m.get_bool(key).map_err(meta_err);
    let model = str_key(keys::TOKENIZER_MODEL)?
        .ok_or(TokenizerError::MissingKey { key: keys::TOKENIZER_MODEL })?
        .to_owned();
    let tokens = m
        .get_str_array(keys::TOKENIZER_TOKENS)
        .map_err(meta_err)?
        .ok_or(TokenizerError::MissingKey { key: keys::TOKENIZER_TOKENS })?
        .to_vec();
    let scores = match m.get_f32_array(keys::TOKENIZER_SCORES) {
        Ok(s) => s.map(<[f32]>::to_vec).unwrap_or_default(),
        // Some converters store integer scores; llama.cpp accepts them.
        Err(_) => m
            .get_i32_array(keys::TOKENIZER_SCORES)
            .map_err(meta_err)?
            .map(|s| s.iter().map(|&v| v as f32).collect())
            .unwrap_or_default(),
    };
    let token_types = m.get_i32_array(keys::TOKENIZER_TOKEN_TYPE).map_err(meta_err)?.map(<[i32]>::to_vec).unwrap_or_default();
    let merges = m.get_str_array(keys::TOKENIZER_MERGES).map_err(meta_err)?.map(<[String]>::to_vec).unwrap_or_default();
    Ok(Vocab {
        model,
        pre: str_key(keys::TOKENIZER_PRE)?.map(str::to_owned),
        tokens,
        scores,
        token_types,
        merges,
        bos: id(keys::TOKENIZER_BOS_ID)?,
        eos: id(keys::TOKENIZER_EOS_ID)?,
        eot: id(keys::TOKENIZER_EOT_ID)?,
        eom: id(keys::TOKENIZER_EOM_ID)?,
        unk: id(keys::TOKENIZER_UNKNOWN_ID)?,
        pad: id(keys::TOKENIZER_PADDING_ID)?,
        fim_pre: id("tokenizer.ggml.fim_pre_token_id")?.or(id("tokenizer.ggml.prefix_token_id")?),
        fim_suf: id("tokenizer.ggml.fim_suf_token_id")?.or(id("tokenizer.ggml.suffix_token_id")?),
        fim_mid: id("tokenizer.ggml.fim_mid_token_id")?.or(id("tokenizer.ggml.middle_token_id")?),
        fim_pad: id("tokenizer.ggml.fim_pad_token_id")?,
        fim_rep: id("tokenizer.ggml.fim_rep_token_id")?,
        fim_sep: id("tokenizer.ggml.fim_sep_token_id")?,
        add_bos: flag(keys::TOKENIZER_ADD_BOS)?,
        add_eos: flag(keys::TOKENIZER_ADD_EOS)?,
        add_space_prefix: flag(keys::TOKENIZER_ADD_SPACE_PREFIX)?,
    })
}
