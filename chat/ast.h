// The syntax tree the parser builds and the interpreter walks.
#ifndef DUET_CHAT_AST_H_
#define DUET_CHAT_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat/value.h"

namespace duet::chat::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // children
    kTuple,     // children (evaluates to a list, as Python tuples print
                // differently only in repr, which templates do not show)
    kDict,      // children: key, value, key, value, ...
    kGetAttr,   // children[0].name
    kGetItem,   // children[0][children[1]]
    kSlice,     // children[0][c1:c2:c3], absent parts null
    kCall,      // children[0](children[1..], kwargs)
    kFilter,    // children[0] | name(children[1..], kwargs)
    kTest,      // children[0] is [not] name(children[1..])
    kNeg,       // -children[0]
    kPos,       // +children[0]
    kNot,       // not children[0]
    kBinary,    // children[0] op children[1]; op in name: + - * / // % ** ~
    kAnd,       // children[0] and children[1]
    kOr,        // children[0] or children[1]
    kCompare,   // children[0] ops[0] children[1] ops[1] ... (chained)
    kCondExpr,  // children[0] if children[1] else children[2] (may be null)
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;
  bool negated = false;  // kTest: `is not`
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // kCompare: == != < <= > >= in notin
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (cond, body) ..., else_body
    kFor,       // for targets in expr [if filter]: body else else_body
    kSet,       // set targets = expr, or set targets[0].attr = expr
    kSetBlock,  // set targets[0] %}body{% endset
    kMacro,     // macro name(params) body
    kBreak,
    kContinue,
    kGeneration,  // transformers' {% generation %}: renders its body
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<std::string> targets;
  std::string attr;  // kSet on a namespace attribute
  ExprPtr filter;    // kFor's `if`
  // kMacro: name in `text`, parameters with optional defaults.
  std::vector<std::pair<std::string, ExprPtr>> params;
};

}  // namespace duet::chat::jinja

#endif  // DUET_CHAT_AST_H_
