// A small code editor: a plain <textarea> (so typing, selection, undo, screen readers and the
// keyboard behave as in any text field) over a highlighted copy of its text, with a line-number
// gutter and one highlighted line (the error's). Tab is left to move the focus, so the editor
// never traps a keyboard user. Languages: 'rhai' (rules) and 'json' (inputs).
'use strict';

(function () {
  const RHAI = new RegExp([
    String.raw`(?<comment>\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$))`,
    String.raw`(?<string>"(?:[^"\\\n]|\\.)*"?|\x60(?:[^\x60\\]|\\[\s\S])*\x60?|'(?:[^'\\\n]|\\.)')`,
    String.raw`(?<number>\b(?:0x[0-9a-fA-F_]+|\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?)\b)`,
    String.raw`(?<keyword>\b(?:let|const|if|else|switch|while|loop|for|in|do|until|break|continue|return|throw|try|catch|fn|private|import|export|as|global|this|true|false)\b)`,
    String.raw`(?<variable>\b(?:user|context|configuration)\b)`,
    String.raw`(?<func>\b[A-Za-z_]\w*(?=\s*\())`,
  ].join('|'), 'g');

  const JSON_RE = new RegExp([
    String.raw`(?<key>"(?:[^"\\\n]|\\.)*"(?=\s*:))`,
    String.raw`(?<string>"(?:[^"\\\n]|\\.)*"?)`,
    String.raw`(?<number>-?\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b)`,
    String.raw`(?<keyword>\b(?:true|false|null)\b)`,
  ].join('|'), 'g');

  function escapeHtml(s) {
    return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }

  /** The text as [class, text] pieces ('' for plain text). */
  function tokenize(text, re) {
    const out = [];
    let last = 0;
    re.lastIndex = 0;
    for (let m = re.exec(text); m; m = re.exec(text)) {
      if (m[0] === '') { re.lastIndex++; continue; }
      if (m.index > last) out.push(['', text.slice(last, m.index)]);
      const cls = Object.keys(m.groups).find((k) => m.groups[k] !== undefined) ?? '';
      out.push([cls, m[0]]);
      last = m.index + m[0].length;
    }
    if (last < text.length) out.push(['', text.slice(last)]);
    return out;
  }

  /** HTML of each line (pieces that span lines, such as block comments, are split). */
  function highlightLines(text, language) {
    const lines = [[]];
    for (const [cls, piece] of tokenize(text, language === 'json' ? JSON_RE : RHAI)) {
      piece.split('\n').forEach((part, i) => {
        if (i > 0) lines.push([]);
        if (part) lines[lines.length - 1].push(cls ? `<span class="tok-${cls}">${escapeHtml(part)}</span>` : escapeHtml(part));
      });
    }
    return lines.map((l) => l.join(''));
  }

  /**
   * Builds an editor in `container`. Options: `label` (accessible name), `language`,
   * `onChange(text)`, `rows`. Returns { value, setValue, setErrorLine, goToLine, focus, textarea }.
   */
  function createEditor(container, { label, language = 'rhai', onChange = () => {}, rows = 16, id } = {}) {
    container.classList.add('editor');
    container.style.setProperty('--rows', rows);
    container.innerHTML = `
      <div class="gutter" aria-hidden="true"><div class="gutter-inner"></div></div>
      <div class="code">
        <pre class="highlight" aria-hidden="true"><code></code></pre>
        <textarea spellcheck="false" wrap="off" autocomplete="off" autocapitalize="off"></textarea>
      </div>`;
    const textarea = container.querySelector('textarea');
    const code = container.querySelector('pre code');
    const pre = container.querySelector('pre');
    const gutter = container.querySelector('.gutter-inner');
    textarea.setAttribute('aria-label', label);
    if (id) textarea.id = id;
    let errorLine = 0;

    function render() {
      const lines = highlightLines(textarea.value, language);
      code.innerHTML = lines
        .map((html, i) => `<span class="line${i + 1 === errorLine ? ' error-line' : ''}" data-line="${i + 1}">${html || ' '}</span>`)
        .join('');
      gutter.innerHTML = lines
        .map((_, i) => `<div class="${i + 1 === errorLine ? 'error-line' : ''}">${i + 1}</div>`)
        .join('');
      sync();
    }
    function sync() {
      pre.style.transform = `translate(${-textarea.scrollLeft}px, ${-textarea.scrollTop}px)`;
      gutter.style.transform = `translateY(${-textarea.scrollTop}px)`;
    }
    textarea.addEventListener('input', () => { render(); onChange(textarea.value); });
    textarea.addEventListener('scroll', sync);

    function lineStart(n) {
      const lines = textarea.value.split('\n');
      let at = 0;
      for (let i = 0; i < Math.min(n - 1, lines.length); i++) at += lines[i].length + 1;
      return at;
    }
    const editor = {
      textarea,
      get value() { return textarea.value; },
      setValue(text) {
        const { selectionStart, selectionEnd } = textarea;
        textarea.value = text;
        textarea.setSelectionRange(Math.min(selectionStart, text.length), Math.min(selectionEnd, text.length));
        render();
      },
      /** Highlights line `n` (1-based; 0 clears it). */
      setErrorLine(n) {
        errorLine = n || 0;
        render();
      },
      get errorLine() { return errorLine; },
      /** Puts the caret at line `n`, column `col` and scrolls it into view. */
      goToLine(n, col = 1) {
        const at = lineStart(n) + Math.max(0, col - 1);
        textarea.focus();
        textarea.setSelectionRange(at, at);
        const lh = parseFloat(getComputedStyle(textarea).lineHeight) || 20;
        textarea.scrollTop = Math.max(0, (n - 3) * lh);
        sync();
      },
      focus() { textarea.focus(); },
    };
    render();
    return editor;
  }

  window.createEditor = createEditor;
})();
