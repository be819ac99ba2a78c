 (8".<|im_start|>user
héllo 中文 🙂<|im_end|>
